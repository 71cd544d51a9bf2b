"""The OpenAI objects we speak, as pydantic models, in four modules: errors (the envelope), requests
(bodies we accept), objects (files, jobs, events, checkpoints, models: built from registry rows) and
completions (chat and text, streamed chunks, usage, log-probs).

Field names, ids and shapes follow OpenAI's API (openai-python's `types/`), so the official client
parses our answers unchanged. What OpenAI lacks we add as extra fields, never by changing theirs.
"""

from tuneforge.serve.protocol.errors import (  # noqa: F401
    APIError, not_found, ErrorInfo, ErrorResponse,
)
from tuneforge.serve.protocol.requests import (  # noqa: F401
    Hyperparameters, MethodHyperparameters, Method, check_metadata, JobCreate, ContentPart, ChatMessage, StreamOptions, SamplingRequest, ChatCompletionRequest, CompletionRequest, FeedbackCreate, TOOLS_UNSUPPORTED, MAX_PROMPTS, METADATA_KEYS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS, Seed64,
)
from tuneforge.serve.protocol.objects import (  # noqa: F401
    omitted_when_none, ObjectList, ListPage, FileObject, FileDeleted, FineTuningJobHyperparameters, SupervisedMethod, FineTuningJobMethod, FineTuningJobError, FineTuningJobTuneforge, FineTuningJob, FineTuningJobEvent, FineTuningJobCheckpointMetrics, FineTuningJobCheckpoint, BaseModelInfo, TunedModelInfo, Model, ModelDeleted, Feedback, LatencySummary, RequestMetrics, MODEL_OWNERS, FinishReason,
)
from tuneforge.serve.protocol.completions import (  # noqa: F401
    Usage, TopLogprob, ChatCompletionTokenLogprob, ChoiceLogprobs, ChatCompletionMessage, ChatCompletionChoice, ChatCompletion, ChoiceDelta, ChatCompletionChunkChoice, ChatCompletionChunk, CompletionLogprobs, CompletionChoice, Completion,
)
