"""The OpenAI objects we speak, as pydantic models, in four modules: errors (the envelope), requests
(bodies we accept), objects (files, jobs, events, checkpoints, models: built from registry rows) and
completions (chat and text, streamed chunks, usage, log-probs).

Field names, ids and shapes follow OpenAI's API (openai-python's `types/`), so the official client
parses our answers unchanged. What OpenAI lacks we add as extra fields, never by changing theirs.
"""

from tuneforge.serve.protocol.completions import (  # noqa: F401
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionMessage,
    ChatCompletionTokenLogprob,
    ChoiceDelta,
    ChoiceLogprobs,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    TopLogprob,
    Usage,
)
from tuneforge.serve.protocol.errors import (  # noqa: F401
    APIError,
    ErrorInfo,
    ErrorResponse,
    not_found,
)
from tuneforge.serve.protocol.objects import (  # noqa: F401
    MODEL_OWNERS,
    BaseModelInfo,
    Feedback,
    FileDeleted,
    FileObject,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobCheckpointMetrics,
    FineTuningJobError,
    FineTuningJobEvent,
    FineTuningJobHyperparameters,
    FineTuningJobMethod,
    FineTuningJobTuneforge,
    FinishReason,
    LatencySummary,
    ListPage,
    Model,
    ModelDeleted,
    ObjectList,
    RequestMetrics,
    SupervisedMethod,
    TunedModelInfo,
    omitted_when_none,
)
from tuneforge.serve.protocol.requests import (  # noqa: F401
    MAX_PROMPTS,
    METADATA_KEY_CHARS,
    METADATA_KEYS,
    METADATA_VALUE_CHARS,
    TOOLS_UNSUPPORTED,
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    ContentPart,
    FeedbackCreate,
    Hyperparameters,
    JobCreate,
    Method,
    MethodHyperparameters,
    SamplingRequest,
    Seed64,
    StreamOptions,
    check_metadata,
)
