/* Causal attention with dropout on the pattern, for one CPU thread's share of (batch, head)
 * pairs: the scores, softmax, dropout and pattern @ values of every query in one pass, and
 * the backward pass recomputing them from each query's log-sum-exp (flash-attention style),
 * so no [B, H, Q, P] tensor is ever written to memory.
 *
 * Why it exists: torch's CPU attention with dropout falls back to its math path (several
 * [B, H, Q, P] tensors written and read per layer), which was half the transformer's time in
 * a paper-size training step. The dropout mask is a counter-based hash of (seed, pair, query
 * position, key), so the backward pass regenerates it instead of storing it, and the draws do
 * not depend on how the pairs are split between threads.
 *
 * Layouts (float32; pair = b * H + h). q, k, v, dz are read where torch has them: the row of
 * E floats of (batch b, token i, head h) starts at b * batch + i * row + h * E (the strides of
 * a [B, tokens, H, E] tensor whose last two dimensions are contiguous, such as the q, k, v
 * views of one fused projection). z, dq [B, Q, H, E] and dk, dv [B, P, H, E] are written
 * contiguous, lse [B, H, Q]. E is a multiple of W (the caller pads with zeros otherwise).
 * Query i, at token position positions[i] (ascending, < 65536), sees key j when
 * j <= positions[i] and (key_mask[b][j] != 0 or j == positions[i]): causal, padding hidden,
 * a padding query still sees itself. key_mask is [B or 1, P rounded up to W] floats, 0 after P.
 * Loops over keys run over whole vectors of W floats (GCC/Clang vector extensions: one AVX512
 * register, two AVX2 ones, four NEON ones); queries run in groups of G that share each load
 * of a key or value row. exp is a polynomial on those vectors (Cephes' expf, relative error
 * ~2e-7 on [-87, 0]).
 */
#include "vectors.h"

#define G 4 /* queries per group */

/* Dropout factors of keys [jb, jb + W) of the query at `position`: element (pair, position,
 * key j) is kept when its hash is >= threshold, i.e. with probability 1 - threshold / 2^32,
 * and kept ones get `kept`. The hash's counter is position * 65536 + j: it does not depend
 * on the padding or on how pairs are split between threads. */
static inline vf keep_block(uint64_t ps, int32_t position, int32_t jb, uint32_t threshold,
                            float kept) {
    const vu counter = ((uint32_t)position << 16) + (uint32_t)jb + __builtin_convertvector(IOTA, vu);
    return blend((vi)(counter_hash(counter, ps) >= threshold), splat(kept), splat(0.0f));
}

typedef struct {
    const float *q, *k, *v, *dz;
    int64_t q_batch, q_row, kv_batch, kv_row, dz_batch, dz_row;
    const float *key_mask;
    int64_t key_mask_batch; /* 0: one mask for every window */
    const int32_t *positions;
    int32_t H, Q, P, E;
    float scale, p_drop;
    uint32_t threshold;
    uint64_t seed;
    float *z, *lse, *dq, *dk, *dv;
} Attention;

static inline int32_t round_up(int32_t n) { return (n + W - 1) / W * W; }

/* Which of keys [jb, jb + W) the query at `position` sees, as 1/0 floats. */
static inline vf seen_block(const float *key_mask, int32_t position, int32_t jb) {
    const vf j = IOTA + (float)jb;
    const vf pos = splat((float)position), one = splat(1.0f), zero = splat(0.0f);
    const vf visible = blend(load(key_mask + jb) != zero, one, blend(j == pos, one, zero));
    return blend(j <= pos, visible, zero);
}

/* The pair's key rows transposed into rows_t [E, P_pad] (zero past P): each block of W keys
 * of one dimension is then one vector. */
static inline __attribute__((always_inline)) void transpose_rows(
    const float *rows, int64_t row_stride, int32_t P, const int32_t E, float *rows_t) {
    const int32_t padded = round_up(P);
    for (int32_t c = 0; c < E; c++)
        for (int32_t j = P; j < padded; j++) rows_t[(int64_t)c * padded + j] = 0.0f;
    for (int32_t j = 0; j < P; j++)
        for (int32_t c = 0; c < E; c++) rows_t[(int64_t)c * padded + j] = rows[j * row_stride + c];
}

/* out[g][j] = x_scale * sum_c x[g][c] * rows_t[c][j] for the G rows of x ([G, E]) and keys
 * [0, nb) (out is [G, P_pad]): a query group's scores, or dz's products with the values.
 * Each load of a row of keys serves the G queries. */
static inline __attribute__((always_inline)) void group_products(
    const float *x, float x_scale, const float *rows_t, int32_t padded, const int32_t E,
    int32_t nb, float *out) {
    for (int32_t jb = 0; jb < nb; jb += W) {
        vf acc[G];
        for (int g = 0; g < G; g++) acc[g] = splat(0.0f);
        for (int32_t c = 0; c < E; c++) {
            const vf row = load(rows_t + (int64_t)c * padded + jb);
            for (int g = 0; g < G; g++) acc[g] += x[g * E + c] * row;
        }
        for (int g = 0; g < G; g++) store(out + g * padded + jb, acc[g] * x_scale);
    }
}

/* The rows of queries [i0, i0 + G) into group [G, E] (rows past Q are zero) and their
 * positions (past Q: the last query's, so the group's keys end at its last live query). */
static inline __attribute__((always_inline)) int32_t gather_group(
    const float *rows, int64_t row_stride, const int32_t *positions, int32_t Q, int32_t i0,
    const int32_t E, float *group, int32_t *group_positions) {
    const int32_t live = Q - i0 < G ? Q - i0 : G;
    for (int g = 0; g < G; g++) {
        group_positions[g] = positions[g < live ? i0 + g : Q - 1];
        const float *row = rows + (int64_t)(i0 + g) * row_stride;
        for (int32_t c = 0; c < E; c += W) store(group + g * E + c, g < live ? load(row + c) : splat(0.0f));
    }
    return live;
}

static inline __attribute__((always_inline)) void forward_pairs(
    const Attention *a, const int32_t E, int64_t pair_begin, int64_t pair_end, float *scratch) {
    /* Every field in a local: stores through the float pointers could otherwise alias the
     * struct's float fields, and the compiler would reload them in the inner loops. */
    const int32_t H = a->H, Q = a->Q, P = a->P, padded = round_up(P);
    const int64_t out_row = (int64_t)H * E, q_row = a->q_row, kv_row = a->kv_row;
    const int32_t *positions = a->positions;
    const float scale = a->scale, p_drop = a->p_drop;
    const uint32_t threshold = a->threshold;
    float *const z = a->z, *const lse = a->lse;
    float *kt = scratch, *s = kt + (int64_t)E * padded; /* [E, padded], [G, padded] */
    float q_g[G * E], inv_sum[G];
    int32_t pos_g[G];
    const float inv_keep = p_drop > 0.0f ? 1.0f / (1.0f - p_drop) : 1.0f;
    for (int64_t pair = pair_begin; pair < pair_end; pair++) {
        const int64_t b = pair / H, h = pair % H;
        const float *q_p = a->q + b * a->q_batch + h * E;
        const float *k_p = a->k + b * a->kv_batch + h * E, *v_p = a->v + b * a->kv_batch + h * E;
        const float *key_mask = a->key_mask + b * a->key_mask_batch;
        const uint64_t ps = stream_seed(a->seed, pair);
        transpose_rows(k_p, kv_row, P, E, kt);
        for (int32_t i0 = 0; i0 < Q; i0 += G) {
            const int32_t live = gather_group(q_p, q_row, positions, Q, i0, E, q_g, pos_g);
            const int32_t n = pos_g[G - 1] + 1, nb = round_up(n);
            group_products(q_g, scale, kt, padded, E, nb, s);
            for (int g = live; g < G; g++) /* rows past Q: no softmax, weight 0 */
                for (int32_t jb = 0; jb < nb; jb += W) store(s + g * padded + jb, splat(0.0f));
            for (int g = 0; g < live; g++) {
                float *s_g = s + g * padded;
                vf running_max = splat(-FLT_MAX), running_sum = splat(0.0f);
                for (int32_t jb = 0; jb < nb; jb += W) {
                    const vf seen = seen_block(key_mask, pos_g[g], jb);
                    const vf x = blend(seen != 0.0f, load(s_g + jb), splat(-FLT_MAX));
                    running_max = blend(x > running_max, x, running_max);
                }
                const float max = max_lane(running_max);
                /* exp(score - max), dropped: z divides by the sum of the undropped ones. */
                for (int32_t jb = 0; jb < nb; jb += W) {
                    const vf seen = seen_block(key_mask, pos_g[g], jb);
                    const vf w = exp_nonpositive(load(s_g + jb) - max) * seen;
                    running_sum += w;
                    store(s_g + jb, p_drop > 0.0f ? w * keep_block(ps, pos_g[g], jb, threshold, inv_keep) : w);
                }
                const float sum = sum_lanes(running_sum);
                inv_sum[g] = 1.0f / sum;
                lse[pair * Q + i0 + g] = max + logf(sum);
            }
            vf acc[G][E / W]; /* z of the group: each value row loaded once for G queries */
            for (int g = 0; g < G; g++)
                for (int32_t c = 0; c < E / W; c++) acc[g][c] = splat(0.0f);
            for (int32_t j = 0; j < n; j++)
                for (int32_t c = 0; c < E / W; c++) {
                    const vf v_j = load(v_p + j * kv_row + c * W);
                    for (int g = 0; g < G; g++) acc[g][c] += s[g * padded + j] * v_j;
                }
            for (int g = 0; g < live; g++)
                for (int32_t c = 0; c < E / W; c++)
                    store(z + (b * Q + i0 + g) * out_row + h * E + c * W, acc[g][c] * inv_sum[g]);
        }
    }
}

/* Scratch for one call: n_rows rows of the padded key count, on the heap (P may be large
 * for the stack); the entry points return 0 when it cannot be had. */
static float *scratch_rows(int32_t P, int64_t n_rows) {
    return malloc(sizeof(float) * (size_t)(n_rows * round_up(P)));
}

int attention_forward(const Attention *a, int64_t pair_begin, int64_t pair_end) {
    float *scratch = scratch_rows(a->P, a->E + G); /* kt, the group's scores */
    if (scratch == NULL) return 0;
    if (a->E == W) /* the paper's d_head: every loop over it is one vector operation */
        forward_pairs(a, W, pair_begin, pair_end, scratch);
    else
        forward_pairs(a, a->E, pair_begin, pair_end, scratch);
    free(scratch);
    return 1;
}

static inline __attribute__((always_inline)) void backward_pairs(
    const Attention *a, const int32_t E, int64_t pair_begin, int64_t pair_end, float *scratch) {
    const int32_t H = a->H, Q = a->Q, P = a->P, padded = round_up(P); /* locals: as forward */
    const int64_t out_row = (int64_t)H * E, q_row = a->q_row, kv_row = a->kv_row;
    const int64_t dz_row = a->dz_row;
    const int32_t *positions = a->positions;
    const float scale = a->scale, p_drop = a->p_drop, *const lse = a->lse;
    const uint32_t threshold = a->threshold;
    float *const dq = a->dq;
    float *kt = scratch, *vt = kt + (int64_t)E * padded; /* [E, padded] each */
    float *ds = vt + (int64_t)E * padded, *pd = ds + G * padded; /* [G, padded] each */
    float q_g[G * E], dz_g[G * E], z_g[G * E];
    int32_t pos_g[G];
    const float inv_keep = p_drop > 0.0f ? 1.0f / (1.0f - p_drop) : 1.0f;
    for (int64_t pair = pair_begin; pair < pair_end; pair++) {
        const int64_t b = pair / H, h = pair % H;
        const float *q_p = a->q + b * a->q_batch + h * E, *dz_p = a->dz + b * a->dz_batch + h * E;
        const float *k_p = a->k + b * a->kv_batch + h * E, *v_p = a->v + b * a->kv_batch + h * E;
        const float *z_p = a->z + b * Q * out_row + h * E;
        float *dk_p = a->dk + b * P * out_row + h * E, *dv_p = a->dv + b * P * out_row + h * E;
        const float *key_mask = a->key_mask + b * a->key_mask_batch;
        const uint64_t ps = stream_seed(a->seed, pair);
        transpose_rows(k_p, kv_row, P, E, kt);
        transpose_rows(v_p, kv_row, P, E, vt);
        for (int32_t j = 0; j < P; j++)
            for (int32_t c = 0; c < E; c++) dk_p[j * out_row + c] = dv_p[j * out_row + c] = 0.0f;
        for (int32_t i0 = 0; i0 < Q; i0 += G) {
            /* Rows past Q are zero in q_g, dz_g and z_g: their ds and dz are 0, so they add
             * nothing to dk or dv. */
            const int32_t live = gather_group(q_p, q_row, positions, Q, i0, E, q_g, pos_g);
            gather_group(dz_p, dz_row, positions, Q, i0, E, dz_g, pos_g);
            gather_group(z_p, out_row, positions, Q, i0, E, z_g, pos_g);
            const int32_t n = pos_g[G - 1] + 1, nb = round_up(n);
            group_products(q_g, scale, kt, padded, E, nb, ds); /* the scores, for now */
            group_products(dz_g, 1.0f, vt, padded, E, nb, pd); /* dL/d(dropped pattern) */
            for (int g = live; g < G; g++) /* rows past Q: nothing to propagate */
                for (int32_t jb = 0; jb < nb; jb += W) {
                    store(ds + g * padded + jb, splat(0.0f));
                    store(pd + g * padded + jb, splat(0.0f));
                }
            for (int g = 0; g < live; g++) {
                const float row_lse = lse[pair * Q + i0 + g];
                float d = 0.0f; /* sum_j pattern_ij dL/dpattern_ij = dz_i . z_i */
                for (int32_t c = 0; c < E; c++) d += dz_g[g * E + c] * z_g[g * E + c];
                for (int32_t jb = 0; jb < nb; jb += W) {
                    float *ds_g = ds + g * padded + jb, *pd_g = pd + g * padded + jb;
                    const vf seen = seen_block(key_mask, pos_g[g], jb);
                    const vf p = exp_nonpositive(load(ds_g) - row_lse) * seen;
                    const vf keep = p_drop > 0.0f
                                        ? keep_block(ps, pos_g[g], jb, threshold, inv_keep)
                                        : splat(1.0f);
                    store(ds_g, p * (keep * load(pd_g) - d) * scale);
                    store(pd_g, p * keep);
                }
            }
            vf dq_acc[G][E / W]; /* each key and value row is loaded and stored once per group */
            for (int g = 0; g < G; g++)
                for (int32_t c = 0; c < E / W; c++) dq_acc[g][c] = splat(0.0f);
            for (int32_t j = 0; j < n; j++)
                for (int32_t c = 0; c < E / W; c++) {
                    float *dk_j = dk_p + j * out_row + c * W, *dv_j = dv_p + j * out_row + c * W;
                    const vf k_j = load(k_p + j * kv_row + c * W);
                    vf dk_sum = load(dk_j), dv_sum = load(dv_j);
                    for (int g = 0; g < G; g++) {
                        const float ds_gj = ds[g * padded + j];
                        dv_sum += pd[g * padded + j] * load(dz_g + g * E + c * W);
                        dk_sum += ds_gj * load(q_g + g * E + c * W);
                        dq_acc[g][c] += ds_gj * k_j;
                    }
                    store(dk_j, dk_sum);
                    store(dv_j, dv_sum);
                }
            for (int g = 0; g < live; g++)
                for (int32_t c = 0; c < E / W; c++)
                    store(dq + (b * Q + i0 + g) * out_row + h * E + c * W, dq_acc[g][c]);
        }
    }
}

int attention_backward(const Attention *a, int64_t pair_begin, int64_t pair_end) {
    float *scratch = scratch_rows(a->P, 2 * (a->E + G)); /* kt, vt, d scores, pattern */
    if (scratch == NULL) return 0;
    if (a->E == W)
        backward_pairs(a, W, pair_begin, pair_end, scratch);
    else
        backward_pairs(a, a->E, pair_begin, pair_end, scratch);
    free(scratch);
    return 1;
}

/* The keep factors the kernels use, as float 0/1 [n_pairs, Q, P] (keys after a query's
 * position are 0): for tests that replay the same dropout on the explicit path. */
void dropout_keep(const int32_t *positions, int32_t Q, int32_t P, uint32_t threshold,
                  uint64_t seed, int64_t n_pairs, float *keep) {
    for (int64_t pair = 0; pair < n_pairs; pair++) {
        const uint64_t ps = stream_seed(seed, pair);
        for (int32_t i = 0; i < Q; i++) {
            float *out = keep + (pair * Q + i) * P;
            for (int32_t jb = 0; jb < P; jb += W) {
                const vf block = keep_block(ps, positions[i], jb, threshold, 1.0f);
                for (int32_t k = 0; k < W && jb + k < P; k++)
                    out[jb + k] = jb + k <= positions[i] ? block[k] : 0.0f;
            }
        }
    }
}
