/* SPDX-License-Identifier: MIT */
/*
 * vocab.h - the tokenizer of a model, read from its GGUF `tokenizer.ggml.*`
 * metadata: text to token ids (encode) and ids back to text (a streaming
 * detokenizer per sequence).
 *
 * Two models, matching the reference tokenizers id for id:
 *  - "gpt2": byte-level BPE (Qwen2/3, Llama 3, DeepSeek). Input is split on
 *    added tokens, normalized (NFC for `pre` = "qwen2", as Qwen's
 *    tokenizer.json says), cut into words by the pre-tokenizer regexes chosen
 *    by tokenizer.ggml.pre ("qwen2", "llama-bpe", "deepseek-llm",
 *    "deepseek-v3", anything else: the GPT-2 regex), mapped byte to unicode
 *    and merged by rank.
 *  - "llama": SentencePiece BPE (Llama 2, Mixtral): a dummy-prefix space is
 *    added before each text fragment, spaces become U+2581, the adjacent
 *    pair whose merged piece has the highest score is merged until none is
 *    left, and characters without a piece fall back to <0xXX> byte tokens.
 *
 * Input text is bytes. Invalid UTF-8 is first replaced, as the WHATWG
 * TextDecoder does (one U+FFFD per maximal invalid subpart), so the text the
 * tokenizer sees is always valid UTF-8.
 *
 * Added tokens (token type CONTROL, USER_DEFINED, and UNKNOWN) are found in
 * the input when parse_special is set, leftmost first and longest at that
 * position, as Hugging Face tokenizers and llama-server do.
 *
 * Threads: a struct vocab is immutable once vocab_init_gguf() returns; any
 * number of threads may encode and decode with it at the same time. A struct
 * vocab_detok belongs to one sequence and one thread at a time.
 */
#ifndef MOED_ENGINE_VOCAB_H
#define MOED_ENGINE_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf_file;
struct vocab;

/* Token types as GGUF stores them in tokenizer.ggml.token_type. */
enum vocab_ttype {
    VOCAB_TTYPE_NORMAL = 1,
    VOCAB_TTYPE_UNKNOWN = 2,
    VOCAB_TTYPE_CONTROL = 3,
    VOCAB_TTYPE_USER_DEFINED = 4,
    VOCAB_TTYPE_UNUSED = 5,
    VOCAB_TTYPE_BYTE = 6,
};

enum vocab_kind {
    VOCAB_KIND_BPE, /* tokenizer.ggml.model "gpt2" */
    VOCAB_KIND_SPM, /* tokenizer.ggml.model "llama" */
};

/* Special ids; -1 when the model has none. */
struct vocab_special {
    int32_t bos, eos, eot, unk, pad;
    bool add_bos, add_eos; /* add them when encoding with add_special */
};

/*
 * Reads the tokenizer of f. Returns 0, or ERR_TOKENIZER (bad or missing
 * metadata), ERR_MODEL_FORMAT (a key of the wrong type), -ENOMEM; on failure
 * *out is NULL and err (errlen bytes) holds one line naming the key, such as
 * "tokenizer.ggml.merges: entry 17 is not 'a b'". f is borrowed: nothing of
 * it is kept, it may be closed afterwards.
 */
int vocab_init_gguf(struct vocab **out, const struct gguf_file *f, char *err, size_t errlen);
/* Frees v; vocab_free(NULL) does nothing. */
void vocab_free(struct vocab *v);

enum vocab_kind vocab_kind(const struct vocab *v);
uint32_t vocab_n_tokens(const struct vocab *v);
const struct vocab_special *vocab_special(const struct vocab *v);
/* tokenizer.ggml.pre as read ("default" when absent). Valid until vocab_free. */
const char *vocab_pre(const struct vocab *v);
/* The token's text as GGUF stores it (byte-level unicode for BPE, U+2581 for
 * SPM), NUL-terminated; NULL for an id out of range. Valid until vocab_free. */
const char *vocab_token_text(const struct vocab *v, int32_t id);
/* The token's type, or 0 for an id out of range. */
enum vocab_ttype vocab_token_type(const struct vocab *v, int32_t id);
/* True when text fragments are NFC-normalized before splitting (Qwen), so
 * decode(encode(s)) gives NFC(s) rather than s. */
bool vocab_nfc(const struct vocab *v);
/* Finds a token by its GGUF text; -1 when absent. */
int32_t vocab_find(const struct vocab *v, const char *text, size_t len);
/* True for the ids generation stops at (eos, eot, and CONTROL tokens named
 * eos/eot). */
bool vocab_is_eog(const struct vocab *v, int32_t id);

/* ---- encode ---- */

struct vocab_encode_opts {
    bool add_special;   /* add BOS/EOS where the model says so (add_bos/add_eos) */
    bool parse_special; /* recognise added tokens in the text */
};
/* add_special and parse_special both true. */
struct vocab_encode_opts vocab_encode_opts_default(void);

/* A growable id array the caller owns: zero-initialize it, free it with
 * vocab_tokens_free(). */
struct vocab_tokens {
    int32_t *ids;
    size_t n, cap;
};
void vocab_tokens_free(struct vocab_tokens *t);

/*
 * Tokenizes len bytes of text (any bytes, NULs included) and appends the ids
 * to out. o NULL means vocab_encode_opts_default(). Returns 0, -ENOMEM, or
 * ERR_TOKENIZER when the regex engine fails (its limits); on failure out->n is
 * restored. Allocates working memory per call.
 */
int vocab_encode(const struct vocab *v, const char *text, size_t len,
                 const struct vocab_encode_opts *o, struct vocab_tokens *out);

/* ---- decode ---- */

struct vocab_detok_opts {
    bool show_special;     /* write CONTROL and UNKNOWN tokens as their text */
    bool strip_lead_space; /* SPM only: drop one space at the very start of the
                            * text, where the encoder put its dummy prefix
                            * (true when decoding a sequence from its first
                            * token; false for a continuation such as generated
                            * output after a prompt) */
};

/*
 * Streaming detokenizer state of one sequence; holds the bytes of an
 * incomplete UTF-8 sequence between pushes. Plain data: may be copied, needs
 * no free. The vocab is borrowed and must outlive it.
 */
struct vocab_detok {
    const struct vocab *v;
    struct vocab_detok_opts o;
    bool at_start;     /* nothing written yet (for strip_lead_space) */
    uint8_t pend[4];   /* incomplete UTF-8 sequence held back */
    uint8_t n_pend;
    uint8_t need;      /* continuation bytes still expected */
    uint8_t lo, hi;    /* allowed range of the next continuation byte */
};

void vocab_detok_init(struct vocab_detok *d, const struct vocab *v, const struct vocab_detok_opts *o);
/* Bytes that out must hold for any one push or flush of this vocab. */
size_t vocab_detok_bound(const struct vocab *v);
/*
 * Appends the text of token to out (cap bytes; must be at least
 * vocab_detok_bound()), only complete valid UTF-8: a trailing incomplete
 * sequence is held back for the next push, and invalid bytes become U+FFFD
 * (one per maximal subpart, as TextDecoder). Returns the number of bytes
 * written (0 is normal: a hidden token, or bytes held back), ERR_INVALID for
 * an id out of range, or -ENOBUFS when cap is too small (nothing consumed).
 * Does not allocate; out is not NUL-terminated.
 */
int vocab_detok_push(struct vocab_detok *d, int32_t token, char *out, size_t cap);
/* Ends the sequence: writes U+FFFD for a held-back incomplete sequence and
 * resets the state. Returns the bytes written (0 or 3), or -ENOBUFS when cap < 3. */
int vocab_detok_flush(struct vocab_detok *d, char *out, size_t cap);

/*
 * Decodes a whole sequence (push of every id, then flush) into a new
 * NUL-terminated string *out (free() it) of *len bytes. Returns 0,
 * ERR_INVALID for an id out of range, or -ENOMEM.
 */
int vocab_decode(const struct vocab *v, const int32_t *ids, size_t n,
                 const struct vocab_detok_opts *o, char **out, size_t *len);

/*
 * Replaces invalid UTF-8 in s[0..n) as TextDecoder does. Returns 0 and sets
 * *out NULL when s is valid; else *out is a new NUL-terminated string of
 * *out_len bytes (free() it). Returns -ENOMEM.
 */
int vocab_utf8_sanitize(const char *s, size_t n, char **out, size_t *out_len);

#endif
