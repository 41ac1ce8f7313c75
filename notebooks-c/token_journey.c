/*
 * notebooks-c/token_journey.c: one prompt through the whole model, step by step.
 *
 * Run:  make notebook-token_journey
 *       build/notebooks/token_journey "Some other prompt"
 *
 * The prompt is tokenized with models/tiny-kjv's own tokenizer and run through the model
 * with the reference's public functions, in the order ref/model.c's decoder_layer() calls
 * them, printing the shape (and a few values) of every intermediate:
 *
 *   ids → embedding h⁰ → for each layer: RMSNorm → MLA (q_t, c^KV_t, ĉ_t, k^R_t, the
 *   attention weights of the last token) → residual add → RMSNorm → dense FFN or MoE
 *   (the chosen experts and their gate weights g_{i,t}) → residual add → final RMSNorm →
 *   logits → the five most likely next tokens.
 *
 * model_open() binds the weights; the loop below then drives the per-layer functions on the
 * model's own buffers and latent cache. At the end the model is reset and the same prompt is
 * given to model_forward(); the two logit vectors must be equal bit for bit, since both run
 * the same functions on the same inputs in the same order (the program exits 1 otherwise).
 * tests/test_book.c compares the output with notebooks-c/expected/token_journey.txt, which
 * chapter 0 includes.
 */
#include "error.h"
#include "model.h"
#include "rmsnorm.h"
#include "tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_DIR "models/tiny-kjv"

enum { MAX_T = 64, SHOW = 4 };

/* Prints "name [r, c]  first SHOW values of row ..." for one row of a [rows, cols] array. */
static void show(const char *name, int rows, int cols, const float *row, const char *which)
{
    char shape[32];
    snprintf(shape, sizeof shape, "[%d, %d]", rows, cols);
    printf("  %-26s %-10s %s:", name, shape, which);
    for (int i = 0; i < SHOW && i < cols; i++) printf(" %8.4f", row[i]);
    printf(" ...\n");
}

/* Root mean square of n floats: how large a vector is, independent of its width. */
static double rms(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s / (double)n);
}

/* A token's text, made printable: the tokenizer's decoding with newlines shown as \n. */
static void token_text(const Tokenizer *tok, int id, char *out, size_t cap)
{
    char raw[64];
    const int32_t one = id;
    if (tokenizer_decode(tok, &one, 1, 0, raw, sizeof raw) < 0) raw[0] = '\0';
    size_t o = 0;
    for (const char *p = raw; *p && o + 3 < cap; p++) {
        if (*p == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else
            out[o++] = *p;
    }
    out[o] = '\0';
}

int main(int argc, char **argv)
{
    const char *prompt = argc > 1 ? argv[1] : "In the beginning God created the heaven";
    Tokenizer *tok = tokenizer_load(MODEL_DIR);
    if (!tok) {
        fprintf(stderr, "%s\n", ds_last_error());
        return 1;
    }
    int32_t ids[MAX_T];
    const long T = tokenizer_encode(tok, prompt, strlen(prompt), TOKENIZER_ADD_SPECIAL, ids, MAX_T);
    if (T < 1 || T > MAX_T) {
        fprintf(stderr, "the prompt must be 1..%d tokens (got %ld)\n", MAX_T, T);
        tokenizer_free(tok);
        return 2;
    }

    Model m;
    const ModelOptions opt = { .max_context = MAX_T, .chunk = MAX_T };
    if (model_open(&m, MODEL_DIR, &opt) != 0) {
        fprintf(stderr, "%s\n", ds_last_error());
        tokenizer_free(tok);
        return 1;
    }
    const ModelConfig *c = m.cfg;
    const int D = c->hidden_size, V = c->vocab_size, nh = c->num_attention_heads;
    const int dq = config_qk_head_dim(c), dc = c->kv_lora_rank, dr = c->qk_rope_head_dim;
    const int K = c->num_experts_per_tok, n = (int)T;
    const char *last = "last token";

    printf("A token's journey through %s (D = %d, %d layers, %d heads, vocab %d)\n\n", MODEL_DIR, D,
           c->num_hidden_layers, nh, V);
    printf("prompt: \"%s\"\n%ld token ids (BOS first):", prompt, T);
    for (long t = 0; t < T; t++) printf(" %d", ids[t]);
    printf("\npieces:");
    for (long t = 0; t < T; t++) {
        char piece[64];
        token_text(tok, ids[t], piece, sizeof piece);
        printf(" [%s]", piece);
    }
    printf("\n\n");

    /* h⁰_t = embed[token_t]: one row of the [vocab, D] table per token. */
    int tokens[MAX_T];
    for (int t = 0; t < n; t++) {
        tokens[t] = ids[t];
        dtype_widen(m.h + (size_t)t * D, m.embed.data, m.embed.dtype, (size_t)ids[t] * D, (size_t)D);
    }
    printf("embedding: rows of model.embed_tokens.weight [%d, %d]\n", V, D);
    show("h0", n, D, m.h + (size_t)(n - 1) * D, last);
    printf("  rms(h0) = %.4f\n", rms(m.h, (size_t)n * D));

    for (int l = 0; l < c->num_hidden_layers; l++) {
        const LayerWeights *L = &m.layers[l];
        const size_t nd = (size_t)n * D;
        printf("\nlayer %d (%s)\n", l, L->is_moe ? "MoE" : "dense FFN");
        rmsnorm_forward(m.a, m.h, L->attn_norm, n, D, c->rms_norm_eps);
        show("RMSNorm(h)", n, D, m.a + (size_t)(n - 1) * D, last);
        printf("  rms before %.4f, after %.4f\n", rms(m.h, nd), rms(m.a, nd));

        /* the form model_forward() picks: expanded for a chunk of several tokens (chapter 2) */
        mla_forward(m.b, m.a, &L->attn, &m.cache[l], c, &m.rope, 0, n, n > 1 ? MLA_EXPANDED : MLA_ABSORBED, &m.mla);
        show("q = [q^C ; q^R] per head", n, nh * dq, m.mla.q + (size_t)(n - 1) * nh * dq, last);
        show("[c^KV ; k^R] = kv_a_proj", n, dc + dr, m.mla.kv + (size_t)(n - 1) * (dc + dr), last);
        show("c^KV normalised (cached)", n, dc, m.cache[l].c_kv + (size_t)(n - 1) * dc, last);
        show("k^R rotated (cached)", n, dr, m.cache[l].k_rope + (size_t)(n - 1) * dr, last);
        printf("  attention of the last token, head %d, over positions 0..%d:\n   ", nh - 1, n - 1);
        for (int j = 0; j < n; j++) printf(" %.3f", m.mla.scores[j]); /* the last (t, h) computed */
        printf("\n");
        show("MLA output", n, D, m.b + (size_t)(n - 1) * D, last);
        for (size_t i = 0; i < nd; i++) m.h[i] += m.b[i]; /* h' = h + MLA(RMSNorm(h)) */
        printf("  residual: rms(h') = %.4f\n", rms(m.h, nd));

        rmsnorm_forward(m.a, m.h, L->ffn_norm, n, D, c->rms_norm_eps);
        if (L->is_moe) {
            moe_forward(m.b, m.a, &L->moe, c, n, &m.ffn);
            printf("  router: %d experts in %d groups, K = %d, at most %d groups per token\n", c->n_routed_experts,
                   c->n_group, K, c->topk_group);
            for (int t = n > 3 ? n - 3 : 0; t < n; t++) {
                char piece[64], quoted[68];
                token_text(tok, ids[t], piece, sizeof piece);
                snprintf(quoted, sizeof quoted, "[%s]", piece);
                printf("    %-12s experts", quoted);
                for (int k = 0; k < K; k++) printf(" %2d", m.ffn.expert[t * K + k]);
                printf("   g");
                for (int k = 0; k < K; k++) printf(" %.3f", m.ffn.weight[t * K + k]);
                printf("\n");
            }
            show("MoE output (+ shared)", n, D, m.b + (size_t)(n - 1) * D, last);
        } else {
            swiglu_forward(m.b, m.a, &L->dense, n, m.ffn.hidden);
            printf("  dense SwiGLU, width %d\n", c->intermediate_size);
            show("FFN output", n, D, m.b + (size_t)(n - 1) * D, last);
        }
        for (size_t i = 0; i < nd; i++) m.h[i] += m.b[i]; /* h'' = h' + FFN(RMSNorm(h')) */
        printf("  residual: rms(h'') = %.4f\n", rms(m.h, nd));
    }
    m.pos = n;

    /* The last token's logits: final RMSNorm, then lm_head [vocab, D]. */
    float *logits = malloc(sizeof *logits * (size_t)V), *check = malloc(sizeof *check * (size_t)V);
    if (!logits || !check) {
        perror("malloc");
        return 1;
    }
    rmsnorm_forward(m.a, m.h + (size_t)(n - 1) * D, m.final_norm, 1, D, c->rms_norm_eps);
    linear(logits, m.a, &m.lm_head, 1);
    printf("\nfinal RMSNorm and lm_head [%d, %d]\n", V, D);
    show("logits", 1, V, logits, last);

    /* Top 5 as probabilities: softmax over the whole vocabulary (max subtracted). */
    float max = logits[0];
    for (int i = 1; i < V; i++) max = logits[i] > max ? logits[i] : max;
    double z = 0;
    for (int i = 0; i < V; i++) z += exp((double)logits[i] - max);
    printf("top 5 next tokens:\n");
    int top[5];
    for (int k = 0; k < 5; k++) {
        top[k] = -1;
        for (int i = 0; i < V; i++) {
            int taken = 0;
            for (int j = 0; j < k; j++) taken |= top[j] == i;
            if (!taken && (top[k] < 0 || logits[i] > logits[top[k]])) top[k] = i;
        }
        char piece[64], quoted[68];
        token_text(tok, top[k], piece, sizeof piece);
        snprintf(quoted, sizeof quoted, "[%s]", piece);
        printf("  %5d %-12s logit %8.4f  p %.4f\n", top[k], quoted, logits[top[k]],
               exp((double)logits[top[k]] - max) / z);
    }

    /* The same prompt through model_forward(): the logits must be identical. */
    model_reset(&m);
    if (model_forward(&m, tokens, n, check, false) != 0) {
        fprintf(stderr, "%s\n", ds_last_error());
        return 1;
    }
    double diff = 0;
    int unequal = 0; /* != also catches a NaN on either side */
    for (int i = 0; i < V; i++) {
        unequal += logits[i] != check[i];
        diff = fmax(diff, fabs((double)logits[i] - check[i]));
    }
    printf("\nmax |logits - model_forward's logits| = %g (%d of %d differ)\n", diff, unequal, V);
    free(logits);
    free(check);
    tokenizer_free(tok);
    model_close(&m);
    return unequal != 0;
}
