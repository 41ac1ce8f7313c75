/**
 * \file train_optim.c
 * \brief AdamW, learning-rate schedules, gradient clipping (see train_optim.h).
 */
#include "train_optim.h"

#include "error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int adamw_init(AdamW *opt, const AdamWConfig *cfg, size_t n)
{
    memset(opt, 0, sizeof *opt);
    if (!(cfg->lr > 0)) return ds_error("optimizer: lr must be positive (got %g)", cfg->lr);
    if (!(cfg->beta1 >= 0 && cfg->beta1 < 1))
        return ds_error("optimizer: beta1 must be in [0, 1) (got %g)", cfg->beta1);
    if (!(cfg->beta2 >= 0 && cfg->beta2 < 1))
        return ds_error("optimizer: beta2 must be in [0, 1) (got %g)", cfg->beta2);
    if (!(cfg->eps > 0)) return ds_error("optimizer: eps must be positive (got %g)", cfg->eps);
    if (cfg->warmup_steps < 0 || cfg->total_steps < 1)
        return ds_error("optimizer: warmup_steps %d / total_steps %d out of range", cfg->warmup_steps,
                        cfg->total_steps);
    opt->cfg = *cfg;
    opt->n = n;
    opt->m = calloc(n ? n : 1, sizeof(float));
    opt->v = calloc(n ? n : 1, sizeof(float));
    if (!opt->m || !opt->v) {
        adamw_free(opt);
        return ds_error("optimizer: out of memory for %zu parameters", n);
    }
    return 0;
}

void adamw_free(AdamW *opt)
{
    free(opt->m);
    free(opt->v);
    memset(opt, 0, sizeof *opt);
}

// ANCHOR: lr_at
double lr_at(const AdamWConfig *c, int t)
{
    if (t <= c->warmup_steps) return c->lr * t / c->warmup_steps; /* linear warmup to η */
    const double p = c->total_steps > c->warmup_steps
                         ? fmin(1.0, (double)(t - c->warmup_steps) / (c->total_steps - c->warmup_steps))
                         : 1.0; /* progress after warmup */
    if (c->schedule == LR_STEP) {
        const double f = (double)t / c->total_steps; /* fraction of the run */
        return c->lr * (f >= 0.9 ? 0.316 * 0.316 : f >= 0.6 ? 0.316 : 1.0);
    }
    return c->min_lr + (c->lr - c->min_lr) * 0.5 * (1.0 + cos(M_PI * p));
}
// ANCHOR_END: lr_at

// ANCHOR: clip_grad_norm
double clip_grad_norm(float *g, size_t n, double max_norm)
{
    double sq = 0;
    for (size_t i = 0; i < n; i++) sq += (double)g[i] * g[i];
    const double norm = sqrt(sq), coef = max_norm / (norm + 1e-6);
    if (coef < 1)
        for (size_t i = 0; i < n; i++) g[i] = (float)(g[i] * coef);
    return norm;
}
// ANCHOR_END: clip_grad_norm

// ANCHOR: adamw_step
double adamw_step(AdamW *opt, float *params, float *grads)
{
    const AdamWConfig *c = &opt->cfg;
    const double norm =
        c->clip_norm > 0 ? clip_grad_norm(grads, opt->n, c->clip_norm) : clip_grad_norm(grads, opt->n, INFINITY);
    const int t = ++opt->step;
    const double lr = lr_at(c, t);
    const double bc1 = 1 - pow(c->beta1, t), bc2 = 1 - pow(c->beta2, t); /* bias corrections */
    for (size_t i = 0; i < opt->n; i++) {
        const double g = grads[i];
        double p = params[i] * (1 - lr * c->weight_decay); /* decoupled: θ ← θ − η λ θ */
        const double m = c->beta1 * opt->m[i] + (1 - c->beta1) * g;
        const double v = c->beta2 * opt->v[i] + (1 - c->beta2) * g * g;
        opt->m[i] = (float)m; /* the state is float32 */
        opt->v[i] = (float)v;
        p -= lr * (opt->m[i] / bc1) / (sqrt(opt->v[i] / bc2) + c->eps);
        params[i] = (float)p;
    }
    return norm;
}
// ANCHOR_END: adamw_step
