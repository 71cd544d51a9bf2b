"""The service layer: turns a stage call into a recorded run.

The stages (data, train, evaluate, inference) know no database; this room is where their calls
become registry rows: `training.train_run` creates or resumes a run and records what the recipe
reports; `models.resolve_spec` turns a run id, tuned model name or checkpoint name into what to
load; `naming` builds and parses those names in one place. The CLI, the job worker and the server
call it.
"""
