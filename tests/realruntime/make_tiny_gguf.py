"""Write a tiny llama-architecture GGUF model that llama.cpp loads, for real-runtime tests.

The model is random (seeded) and about 0.5 MB, so the tests need no model hub.  Its
tokenizer is SentencePiece style (``tokenizer.ggml.model = "llama"``): ``<unk>``,
``<s>``, ``</s>``, the 256 byte-fallback tokens, the ChatML markers, then ``▁`` and
printable ASCII.  The ``output.weight`` rows of every token that is not NORMAL are zero
and every NORMAL logit is lifted by about 60 (see ``BIAS_DIM``), so the model only ever
emits printable characters and never end-of-text, even when sampling: every completion
runs to ``max_tokens`` (``finish_reason: "length"``).  Greedy (``temperature: 0``) and
seeded generations are reproducible; different seeds give different text.

Usage: ``python tests/realruntime/make_tiny_gguf.py OUT.gguf [--seed N]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "BOS_ID",
    "CHAT_TEMPLATE",
    "CONTEXT_LENGTH",
    "EOS_ID",
    "UNK_ID",
    "tiny_vocab",
    "write_tiny_gguf",
]

N_EMBD = 64
N_BLOCKS = 2
N_HEAD = 4
N_HEAD_KV = 4
N_FF = 128
CONTEXT_LENGTH = 512
ROPE_DIM = N_EMBD // N_HEAD  # 16
ROPE_FREQ_BASE = 1e4
RMS_EPS = 1e-5

UNK_ID = 0
BOS_ID = 1
EOS_ID = 2

# Keeping generations printable and never-ending, without making them greedy:
# residual dimension 0 holds the constant BIAS_VALUE for every token (its embedding column
# is constant and no attention/FFN output writes to it), so after the final RMS norm it is
# always positive.  The NORMAL rows of output.weight carry NORMAL_BIAS_WEIGHT there, which
# lifts every printable token's logit far above the zeroed rows of the special tokens
# (logit 0), while the random part (OUTPUT_ROW_STD) keeps sampling non-trivial.
BIAS_DIM = 0
BIAS_VALUE = 4.0
NORMAL_BIAS_WEIGHT = 20.0
OUTPUT_ROW_STD = 0.5

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

F32Array = npt.NDArray[np.float32]


def tiny_vocab() -> tuple[list[str], list[int]]:
    """The token strings and their ``gguf.TokenType`` values, in id order."""
    from gguf import TokenType

    tokens: list[str] = ["<unk>", "<s>", "</s>"]
    types: list[int] = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        types.append(TokenType.BYTE)
    for marker in ("<|im_start|>", "<|im_end|>"):
        tokens.append(marker)
        types.append(TokenType.CONTROL)
    # "▁" is SentencePiece's space; the ASCII space itself is never a piece.
    for char in ["\u2581", *(chr(code) for code in range(0x21, 0x7F))]:
        tokens.append(char)
        types.append(TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def _normal(rng: np.random.Generator, shape: Sequence[int], std: float) -> F32Array:
    return (rng.standard_normal(tuple(shape)) * std).astype(np.float32)


def write_tiny_gguf(path: Path, *, seed: int = 0) -> Path:
    """Write the tiny model to ``path`` (parent directories are created) and return it.

    The same ``seed`` always gives the same weights.
    """
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, types = tiny_vocab()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    writer = gguf.GGUFWriter(path, arch="llama")
    try:
        writer.add_name("llmfactory-tiny-test")
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_vocab_size(n_vocab)
        writer.add_context_length(CONTEXT_LENGTH)
        writer.add_embedding_length(N_EMBD)
        writer.add_block_count(N_BLOCKS)
        writer.add_feed_forward_length(N_FF)
        writer.add_head_count(N_HEAD)
        writer.add_head_count_kv(N_HEAD_KV)
        writer.add_rope_dimension_count(ROPE_DIM)
        writer.add_rope_freq_base(ROPE_FREQ_BASE)
        writer.add_layer_norm_rms_eps(RMS_EPS)

        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_scores([0.0] * n_vocab)
        writer.add_bos_token_id(BOS_ID)
        writer.add_eos_token_id(EOS_ID)
        writer.add_unk_token_id(UNK_ID)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_chat_template(CHAT_TEMPLATE)

        # Arrays are (out_features, in_features); GGUF stores the dims reversed, which
        # is the layout llama.cpp expects.
        attn_std = N_EMBD**-0.5
        ffn_down_std = N_FF**-0.5
        token_embd = _normal(rng, (n_vocab, N_EMBD), 1.0)
        token_embd[:, BIAS_DIM] = BIAS_VALUE
        writer.add_tensor("token_embd.weight", token_embd)
        for block in range(N_BLOCKS):
            prefix = f"blk.{block}"
            writer.add_tensor(f"{prefix}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
            for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
                weight = _normal(rng, (N_EMBD, N_EMBD), attn_std)
                if name == "attn_output":
                    weight[BIAS_DIM] = 0.0  # keep the bias dimension constant
                writer.add_tensor(f"{prefix}.{name}.weight", weight)
            writer.add_tensor(f"{prefix}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
            writer.add_tensor(f"{prefix}.ffn_gate.weight", _normal(rng, (N_FF, N_EMBD), attn_std))
            writer.add_tensor(f"{prefix}.ffn_up.weight", _normal(rng, (N_FF, N_EMBD), attn_std))
            ffn_down = _normal(rng, (N_EMBD, N_FF), ffn_down_std)
            ffn_down[BIAS_DIM] = 0.0  # keep the bias dimension constant
            writer.add_tensor(f"{prefix}.ffn_down.weight", ffn_down)
        writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        output = _normal(rng, (n_vocab, N_EMBD), OUTPUT_ROW_STD)
        output[:, BIAS_DIM] = NORMAL_BIAS_WEIGHT
        normal = np.array([t == gguf.TokenType.NORMAL for t in types])
        output[~normal] = 0.0  # special, byte and unknown tokens: logit exactly 0
        writer.add_tensor("output.weight", output)

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path, help="where to write the .gguf file")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    args = parser.parse_args(argv)
    out = write_tiny_gguf(args.out, seed=args.seed)
    print(f"{out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
