/**
 * \file route_log.c
 * \brief RouteLog: Model.on_moe copies each chunk's routing to its rows.
 */
#include "route_log.h"

#include "error.h"

#include <stdlib.h>
#include <string.h>

/* Model.on_moe: the chunk's T rows of decoder layer l follow the rows already logged. */
static void log_chunk(void *ctx, int l, int T, const FfnScratch *s)
{
    RouteLog *g = ctx;
    const int i = g->slot[l], t0 = g->rows[i];
    if (t0 + T > g->T) { /* more tokens than the log holds */
        g->rows[i] = g->T + 1;
        return;
    }
    memcpy(g->scores + ((size_t)i * g->T + t0) * g->E, s->scores, sizeof(float) * (size_t)T * g->E);
    memcpy(g->chosen + ((size_t)i * g->T + t0) * g->K, s->expert, sizeof(int) * (size_t)T * g->K);
    g->rows[i] = t0 + T;
}

int route_log_attach(RouteLog *g, Model *m, int T)
{
    const ModelConfig *c = m->cfg;
    const int L = c->num_hidden_layers, E = c->n_routed_experts, K = c->num_experts_per_tok;
    int n_moe = 0;
    for (int l = 0; l < L; l++) n_moe += config_layer_is_moe(c, l);
    *g = (RouteLog){ .E = E, .K = K, .T = T, .n_moe = n_moe };
    g->layer = malloc(sizeof(int) * (size_t)(n_moe ? n_moe : 1));
    g->slot = malloc(sizeof(int) * (size_t)L);
    g->rows = calloc((size_t)(n_moe ? n_moe : 1), sizeof(int));
    g->scores = malloc(sizeof(float) * ((size_t)n_moe * T * E + 1));
    g->chosen = malloc(sizeof(int) * ((size_t)n_moe * T * K + 1));
    if (!g->layer || !g->slot || !g->rows || !g->scores || !g->chosen) {
        route_log_free(g, NULL);
        return ds_error("route log: out of memory for %d tokens over %d MoE layers", T, n_moe);
    }
    for (int l = 0, i = 0; l < L; l++) {
        g->slot[l] = config_layer_is_moe(c, l) ? i : -1;
        if (g->slot[l] >= 0) g->layer[i++] = l;
    }
    m->on_moe = log_chunk;
    m->on_moe_ctx = g;
    return 0;
}

bool route_log_complete(const RouteLog *g)
{
    for (int i = 0; i < g->n_moe; i++)
        if (g->rows[i] != g->T) return false;
    return true;
}

void route_log_free(RouteLog *g, Model *m)
{
    if (m && m->on_moe_ctx == g) {
        m->on_moe = NULL;
        m->on_moe_ctx = NULL;
    }
    free(g->layer);
    free(g->slot);
    free(g->rows);
    free(g->scores);
    free(g->chosen);
    *g = (RouteLog){ 0 };
}
