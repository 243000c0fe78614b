/* SPDX-License-Identifier: MIT */
/*
 * plant.h - the knobs of mkmodel's planted-routing-structure mode, and the
 * token -> topic map it uses, shared with the tests that measure the planted
 * structure (tests/test_tools_planted.c).
 *
 * Random weights route almost at random. With --plant, mkmodel plants the
 * structure trained MoEs are known to have (see tools/mkmodel.c, section
 * "planted routing structure", for how each knob acts on the weights):
 *   layer_corr    router of layer L+1 = rho * router of L + sqrt(1-rho^2) * noise
 *   drift         attn_output and every ffn_down are scaled by `drift`, so one
 *                 layer adds at most about `drift` times the embedding's RMS to
 *                 the residual stream (plain random weights: about 1)
 *   skew          Zipf-like expert popularity: the expert of rank r (a per-layer
 *                 random order) gets a router bias of -skew * ln(r + 1)
 *   n_topics      token embeddings cluster around n_topics centroids; each
 *   topic_spread  topic prefers top-k experts per layer; spread = noise RMS /
 *                 centroid RMS in an embedding (smaller is tighter)
 *   topic_gain    router logit bonus of a topic's preferred experts for a
 *                 token wholly of that topic (the random logits' RMS is 2)
 *   topic_persist the output matrix leans each token's row towards its
 *                 topic's centroid, so that generated text stays on the
 *                 topic of the text before it, as real text does (0 = off;
 *                 1 adds about 1.5x the random logits' RMS to same-topic
 *                 tokens at the medium shape)
 * A zero knob turns that piece off; with every knob zero the model is the
 * plain random one, byte for byte.
 */
#ifndef MOED_TOOLS_PLANT_H
#define MOED_TOOLS_PLANT_H

#include <stdint.h>

struct plant_params {
    float layer_corr;     /* rho in [0, 1) */
    float drift;          /* relative update per layer, > 0; 0 = scales unchanged */
    float skew;           /* Zipf exponent of expert popularity */
    uint32_t n_topics;    /* topic clusters in the embeddings */
    float topic_spread;   /* noise / centroid ratio of an embedding row */
    float topic_gain;     /* router bonus of a preferred expert; 0 = PLANT_TOPIC_GAIN_DEFAULT */
    float topic_persist;  /* output matrix towards the topic; 0 = off */
};

#define PLANT_TOPIC_GAIN_DEFAULT 4.0f

/* What --plant alone sets. */
static inline struct plant_params plant_params_default(void)
{
    return (struct plant_params){.layer_corr = 0.85f, .drift = 0.3f, .skew = 0.7f, .n_topics = 16,
                                 .topic_spread = 1.0f};
}

/* The topic of token id tok (0 when n_topics is 0). It does not depend on the
 * seed, so a predictor experiment can label tokens without the model file. */
static inline uint32_t plant_topic_of(uint32_t tok, uint32_t n_topics)
{
    if (!n_topics)
        return 0;
    uint64_t z = (uint64_t)tok * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (uint32_t)(z % n_topics);
}

#endif
