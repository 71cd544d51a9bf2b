"""A model as one GGUF file for llama.cpp, Ollama and LM Studio: `tuneforge export RUN --gguf FILE`.

The reverse of the catalog's GGUF -> safetensors conversion, written with the `gguf` package's own
writer and tensor-name map (llama.cpp's names: token_embd, blk.N.attn_q, ...). What llama.cpp's
converter does that a writer does not is done here, for the llama architecture only (SmolLM2,
Llama, Mistral-style models; anything else is refused by name):
  - the query and key projections are permuted from Hugging Face's rotary layout (two halves) to
    GGML's (interleaved pairs), as convert_hf_to_gguf.py's LlamaModel.permute does; transformers'
    GGUF loader undoes it on the way back in;
  - the tokenizer goes in as GPT-2-style BPE (tokens, types, merges) with its special tokens, the
    chat template, and EOS as the end-of-turn token, so a chat client stops where the run does;
  - 1-D tensors (norms) stay F32; the matrices are F16, or Q8_0 (blocks of 32 with one scale: about
    half F16's size, where each row's length is a multiple of 32, else F16, as llama.cpp does).
"""

import json
from pathlib import Path

import numpy as np

from tuneforge.errors import UsageError

GGUF_TYPES = ("f16", "q8_0")
ARCHITECTURES = {"LlamaForCausalLM"}
# llama.cpp chooses its pre-tokenizer (the regex that splits text before BPE) by this name; its
# converter recognises a tokenizer by hashing what it makes of a test text. The bundled model's is
# known; other BPE tokenizers get llama.cpp's default (GPT-2's split), which Ollama warns about.
KNOWN_PRE_TOKENIZERS = {49152: "smollm"}  # vocabulary size of SmolLM/SmolLM2's tokenizer
TOKEN_TYPES = {"normal": 1, "control": 3, "user_defined": 4, "unused": 5}


def write_gguf(model, tokenizer, path: Path, dtype: str, name: str, description: str | None = None) -> None:
    """`model` (a transformers causal LM, merged: no adapter) and its tokenizer as a GGUF file at `path`."""
    import gguf

    architecture = (model.config.architectures or [type(model).__name__])[0]
    if architecture not in ARCHITECTURES:
        raise UsageError(
            f"GGUF export supports the llama architecture ({', '.join(sorted(ARCHITECTURES))}), not {architecture}",
            fix="Export merged weights with --merged DIR and convert them with llama.cpp's convert_hf_to_gguf.py.",
        )
    if dtype not in GGUF_TYPES:
        raise UsageError(f"--dtype {dtype}: GGUF export writes {' or '.join(GGUF_TYPES)}")
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    if description:
        writer.add_description(description)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(_rope_theta(config)))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, tokenizer, config.vocab_size)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = getattr(config, "tie_word_embeddings", False)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue  # llama.cpp reads the embedding matrix as the output layer when output.weight is absent
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            if "rotary_emb" in hf_name:
                continue  # recomputed from rope.freq_base
            raise UsageError(f"GGUF export: no llama.cpp name for tensor {hf_name}")
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, config.num_key_value_heads)
        _add_tensor(writer, gguf, gguf_name, data, dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _rope_theta(config) -> float:
    parameters = getattr(config, "rope_parameters", None) or {}
    return parameters.get("rope_theta") or getattr(config, "rope_theta", None) or 10_000.0


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Each head's rows from [first halves..., second halves...] to interleaved pairs (GGML's rotary)."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _add_tensor(writer, gguf, name: str, data: np.ndarray, dtype: str) -> None:
    if data.ndim == 1:
        writer.add_tensor(name, data.astype(np.float32))
    elif dtype == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, quantized, raw_shape=quantized.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor(name, data.astype(np.float16))


def _add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """GPT-2-style BPE: every id's token and type, the merges, the special ids and the chat template."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    if state["model"]["type"] != "BPE":
        raise UsageError(f"GGUF export writes BPE tokenizers; this one is {state['model']['type']}")
    by_id = {index: token for token, index in state["model"]["vocab"].items()}
    special = {t["id"] for t in state.get("added_tokens", []) if t.get("special")}
    added = {t["id"]: t["content"] for t in state.get("added_tokens", [])}
    tokens, types = [], []
    for index in range(vocab_size):
        token = added.get(index, by_id.get(index))
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(TOKEN_TYPES["unused"])
        else:
            tokens.append(token)
            kind = "control" if index in special else "user_defined" if index in added else "normal"
            types.append(TOKEN_TYPES[kind])
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(KNOWN_PRE_TOKENIZERS.get(len(by_id), "default"))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for setter, token_id in (
        (writer.add_bos_token_id, tokenizer.bos_token_id),
        (writer.add_eos_token_id, tokenizer.eos_token_id),
        (writer.add_pad_token_id, tokenizer.pad_token_id),
        (writer.add_unk_token_id, tokenizer.unk_token_id),
    ):
        if token_id is not None:
            setter(token_id)
    writer.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)
