/* SPDX-License-Identifier: MIT */
/*
 * vocab.h - tokenizer vocabularies for the model writer (tools/mkmodel):
 * read from a Hugging Face tokenizer.json (+ tokenizer_config.json), from a
 * SentencePiece tokenizer.model, or made up (a small byte-level BPE vocabulary
 * for test models), and written as GGUF `tokenizer.ggml.*` metadata exactly
 * as llama.cpp's converter writes it.
 */
#ifndef MOED_TOOLS_VOCAB_H
#define MOED_TOOLS_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf_writer;

/* Token types as GGUF stores them (tokenizer.ggml.token_type). */
enum vocab_token_type {
    VOCAB_TOKEN_NORMAL = 1,
    VOCAB_TOKEN_UNKNOWN = 2,
    VOCAB_TOKEN_CONTROL = 3,
    VOCAB_TOKEN_USER_DEFINED = 4,
    VOCAB_TOKEN_UNUSED = 5,
    VOCAB_TOKEN_BYTE = 6,
};

struct vocab_src {
    char *model;         /* "gpt2" (byte-level BPE) or "llama" (SentencePiece) */
    char *pre;           /* tokenizer.ggml.pre: "qwen2", "llama-bpe", "default", ... */
    uint32_t n_tokens;
    char **tokens;       /* n_tokens strings (GGUF form: byte-level unicode for gpt2, '▁' for spm) */
    float *scores;       /* n_tokens, or NULL (gpt2) */
    int32_t *types;      /* n_tokens enum vocab_token_type */
    uint32_t n_merges;
    char **merges;       /* "a b" strings (gpt2), or NULL */
    int32_t bos, eos, eot, unk, pad; /* token ids, -1 when none */
    bool add_bos, add_eos;
    bool add_bos_set, add_eos_set; /* the source names add_bos / add_eos: only then is the key written */
    char *chat_template; /* Jinja text, or NULL */
};

/* Reads a Hugging Face tokenizer.json (byte-level BPE); config_path (may be
 * NULL) is the tokenizer_config.json with the chat template and the
 * bos/eos tokens. pre names the pre-tokenizer ("qwen2" for Qwen). Returns 0
 * or < 0 with a message naming the file in err. */
int vocab_src_from_hf(struct vocab_src **out, const char *json_path, const char *config_path,
                      const char *pre, char *err, size_t errlen);
/* Reads a SentencePiece tokenizer.model (protobuf ModelProto). */
int vocab_src_from_spm(struct vocab_src **out, const char *model_path, char *err, size_t errlen);
/* Makes a small byte-level BPE vocabulary of n_tokens (>= 300) tokens: the
 * 256 byte tokens, merges learnt from a fixed built-in English text, and the
 * specials <|endoftext|>, <|im_start|>, <|im_end|>. Deterministic. */
int vocab_src_synthetic(struct vocab_src **out, uint32_t n_tokens);
/* Pads v to n_tokens entries with "[PAD<id>]" tokens of type UNUSED (score
 * -10000 when v has scores), as the converter does when config.json's
 * vocab_size exceeds the tokenizer (Qwen3: 151,669 ids padded to 151,936).
 * Returns 0, ERR_INVALID when n_tokens < v->n_tokens, or -ENOMEM. */
int vocab_src_pad(struct vocab_src *v, uint32_t n_tokens);
void vocab_src_free(struct vocab_src *v);
/* Writes the tokenizer.ggml.* keys (and tokenizer.chat_template when set). */
void vocab_src_write_gguf(const struct vocab_src *v, struct gguf_writer *w);

#endif
