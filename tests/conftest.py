"""Shared fixtures: a throw-away Tuneforge home per test session, and the bundled model's tokenizer.

The bundled model is converted from GGUF once (~15 s) into `.pytest_cache/tuneforge-models`, which
survives between local runs; CI, on a clean clone, converts it once per run.
"""

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TUNEFORGE_MODEL_CACHE", str(REPO / ".pytest_cache" / "tuneforge-models"))

from tuneforge.hardware import bound_kernel_caches  # noqa: E402

bound_kernel_caches()  # as the CLI does at start, before the first matmul of the session


@pytest.fixture(autouse=True, scope="session")
def tuneforge_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("tuneforge-home")
    os.environ["TUNEFORGE_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def smol_tokenizer():
    from tuneforge.models.catalog import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smol_tokenizer):
    """A randomly initialised 2-layer llama with the bundled model's tokenizer and chat template:
    real code paths, seconds per test."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smol_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=smol_tokenizer.bos_token_id,
        eos_token_id=smol_tokenizer.eos_token_id,
        pad_token_id=smol_tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    smol_tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models' matmuls are too small to split over threads; on a busy machine two threads
    waiting on each other made the engine tests ten times slower. Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def learned_model_dir(tiny_model_dir, smol_tokenizer, tmp_path_factory):
    """The tiny model after six Adam steps on a few chats: its loss there falls from ln V = 10.8
    (where a random model sits, and constant logits too) to ~5, so a path that loses the model's
    output, or trains differently, shows in the loss."""
    import torch
    from helpers import chat
    from transformers import AutoModelForCausalLM

    from tuneforge.data.formats import parse_record
    from tuneforge.data.tokenize import ChatTokenizer
    from tuneforge.train.loop import collate, weighted_token_loss

    records = [chat(f"Question {i}: " + "word " * (3 * i), f"Answer number {i}") for i in range(6)]
    encoded = ChatTokenizer(smol_tokenizer, 0.1).encode([parse_record(r, 1)[1].example for r in records])
    batch = collate(encoded, smol_tokenizer.pad_token_id)
    directory = tmp_path_factory.mktemp("learned-llama")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(6):
        optimizer.zero_grad()
        loss, _, _ = weighted_token_loss(model, batch)
        (loss / batch.trained_tokens).backward()
        optimizer.step()
    model.save_pretrained(directory)
    smol_tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A throw-away PostgreSQL cluster for the whole session (started on first use, ~2 s)."""
    from postgres_cluster import PostgresCluster, postgres_bin

    if postgres_bin() is None:
        if os.environ.get("TUNEFORGE_REQUIRE_POSTGRES"):
            pytest.fail("no PostgreSQL binaries: apt-get install postgresql (make test does it where it can)")
        pytest.skip("no PostgreSQL binaries (apt-get install postgresql)")
    cluster = PostgresCluster(tmp_path_factory.mktemp("postgres")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def new_registry(request):
    """Modules that take this run once against each registry: a function giving a new registry URL
    per call, None (each home's own SQLite file, the default) or a new database in the session's
    PostgreSQL cluster. One per home: a worker takes any queued job of its registry, and a job's
    uploaded bytes are in the home that received them."""
    if request.param == "sqlite":
        return lambda: None
    cluster = request.getfixturevalue("postgres")
    module = request.module.__name__.rsplit(".", 1)[-1]
    names = (f"{module}_{n}" for n in range(1_000))
    return lambda: cluster.create_database(next(names))


@pytest.fixture(scope="session")
def s3_store():
    """A local S3-compatible server (moto's server mode, on loopback) with one bucket: the environment
    that points Tuneforge's storage at it (TUNEFORGE_STORAGE_URL and its endpoint), and an s3fs client."""
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    from server_process import free_port

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {
        "AWS_ACCESS_KEY_ID": "tuneforge",
        "AWS_SECRET_ACCESS_KEY": "tuneforge",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    client = s3fs.S3FileSystem(key="tuneforge", secret="tuneforge", endpoint_url=endpoint, skip_instance_cache=True)
    client.mkdir("tuneforge-artifacts")
    yield {
        "env": {
            **credentials,
            "TUNEFORGE_STORAGE_URL": "s3://tuneforge-artifacts/team",
            "TUNEFORGE_STORAGE_OPTIONS": json.dumps({"endpoint_url": endpoint}),
        },
        "client": client,
    }
    server.stop()
