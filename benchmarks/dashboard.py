"""Server time of the dashboard's pages: the jobs list and a job page whose job logged many steps.

Run: `python -m benchmarks.dashboard [--steps 1000] [--jobs 100] [--repeats 20]`

A throw-away home with SQLite (the default registry), `--jobs` jobs and, for one of them, a metrics
event per step plus a validation every 10 steps, as the worker writes them. Each route is asked
`--repeats` times in-process (FastAPI's TestClient, no network), after one warm-up request; the
table shows the median and the slowest server time (the request's wall time in the app).
"""

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    os.environ["TUNEFORGE_HOME"] = tempfile.mkdtemp(prefix="tuneforge-dashboard-")
    from fastapi.testclient import TestClient

    from tuneforge.registry import jobs
    from tuneforge.serve.app import ServerOptions, create_app
    from tuneforge.web import install_dashboard

    app = create_app(ServerOptions(auth=False, start_worker=False))
    install_dashboard(app)
    client = TestClient(app, base_url="http://127.0.0.1")
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}}
    made = [
        jobs.create_job(
            "default",
            model="smollm2-135m-instruct",
            training_file="file-x",
            validation_file=None,
            suffix=None,
            seed=1,
            method=method,
            extra={},
            meta=None,
        )
        for _ in range(args.jobs)
    ]
    job = made[-1]
    for step in range(1, args.steps + 1):
        data = {"step": step, "train_loss": 2.0 / step, "train_mean_token_accuracy": 0.5, "learning_rate": 1e-4}
        jobs.add_event(job.id, f"Step {step}: training loss={2.0 / step:.4f}", type="metrics", data=data)
        if step % 10 == 0:
            valid = {"step": step, "valid_loss": 1.5, "valid_mean_token_accuracy": 0.4}
            jobs.add_event(job.id, f"Step {step}: validation loss=1.5", type="metrics", data=valid)
    routes = {
        f"jobs list ({args.jobs} jobs)": "/ui/fragments/jobs",
        "job page": f"/ui/fragments/jobs/{job.id}",
        f"job curves ({args.steps} steps)": f"/ui/data/jobs/{job.id}/curves",
        "page shell": f"/ui/jobs/{job.id}",
    }
    print(f"dashboard server time, SQLite, {args.repeats} requests each after a warm-up")
    print("| route | median ms | slowest ms | bytes |")
    print("|---|---|---|---|")
    for label, path in routes.items():
        client.get(path)
        times, size = [], 0
        for _ in range(args.repeats):
            began = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200, (path, response.status_code)
            size = len(response.content)
        print(f"| {label} | {statistics.median(times):.1f} | {max(times):.1f} | {size:,} |")


if __name__ == "__main__":
    main()
