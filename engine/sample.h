/* SPDX-License-Identifier: MIT */
/*
 * sample.h - turning a row of logits into the next token, per request.
 *
 * The pipeline, in order: logit bias; repetition penalty (over prompt and
 * generated tokens, divided for positive logits and multiplied for negative
 * ones); presence and frequency penalties (over generated tokens, OpenAI's
 * definition); then greedy when temperature is 0, else temperature, top-k,
 * softmax, top-p, min-p, and a draw from the request's own random stream.
 * A seeded request draws the same tokens whatever else runs in the batch.
 *
 * Threading: a sampler belongs to one request and is used by the engine
 * thread only. sampler_sample() allocates nothing.
 */
#ifndef MOED_ENGINE_SAMPLE_H
#define MOED_ENGINE_SAMPLE_H

#include <stdbool.h>
#include <stdint.h>

#define SAMPLE_MAX_TOP_LOGPROBS 20

struct sample_bias {
    int32_t id;
    float bias;
};

struct sample_params {
    float temperature;        /* 0 = greedy */
    int32_t top_k;            /* 0 = off */
    float top_p;              /* 1 = off */
    float min_p;              /* 0 = off */
    float repetition_penalty; /* 1 = off */
    float presence_penalty;   /* 0 = off */
    float frequency_penalty;  /* 0 = off */
    uint64_t seed;
    bool has_seed;            /* false: seeded from the clock */
    int32_t n_bias;
    const struct sample_bias *bias; /* copied at init */
    int32_t top_logprobs;     /* 0..SAMPLE_MAX_TOP_LOGPROBS alternatives to report */
};

struct sample_params sample_params_default(void);

/* The chosen token's log-probability under the model's distribution (the raw
 * logits, before bias, penalties and temperature) and the top alternatives. */
struct sample_logprobs {
    float logprob;
    int32_t n_top;
    int32_t top_id[SAMPLE_MAX_TOP_LOGPROBS];
    float top_logprob[SAMPLE_MAX_TOP_LOGPROBS];
};

struct sampler;

/* Creates a sampler for a vocabulary of n_vocab; prompt tokens count for the
 * repetition penalty. Returns 0, -ENOMEM or -EINVAL. */
int sampler_init(struct sampler **out, const struct sample_params *p, uint32_t n_vocab,
                 const int32_t *prompt, int32_t n_prompt);
void sampler_free(struct sampler *s);

/* Picks the next token from logits (n_vocab values, modified in place).
 * lp may be NULL when no log-probabilities are wanted. */
int32_t sampler_sample(struct sampler *s, float *logits, struct sample_logprobs *lp);

/* Records a generated token (for the penalties). */
void sampler_accept(struct sampler *s, int32_t tok);

#endif
