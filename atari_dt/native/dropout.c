/* Dropout of a float32 tensor in one pass: out[i] = x[i] * scale where the counter hash of
 * element i is >= threshold, else 0. The mask is never stored: the backward pass applies the
 * same call to the gradient. Element i's draw depends on the seed and i only. */
#include "vectors.h"

void dropout_apply(const float *x, float *out, int64_t n, uint64_t seed, uint32_t threshold,
                   float scale) {
    const vu iota = __builtin_convertvector(IOTA, vu);
    const int64_t chunk = (int64_t)1 << 32; /* the hash counts 32 bits: one stream per chunk */
    for (int64_t start = 0; start < n; start += chunk) {
        const uint64_t stream = stream_seed(seed, start / chunk);
        const int64_t end = n - start < chunk ? n : start + chunk;
        int64_t i = start;
        for (; i + W <= end; i += W) {
            const vu hash = counter_hash((uint32_t)(i - start) + iota, stream);
            /* x times 0 or scale, not a select: a dropped NaN stays NaN, as in torch */
            store(out + i, load(x + i) * blend((vi)(hash >= threshold), splat(scale), splat(0.0f)));
        }
        if (i < end) { /* the last partial vector */
            float tail[W] = {0.0f};
            for (int64_t t = i; t < end; t++) tail[t - i] = x[t];
            const vu hash = counter_hash((uint32_t)(i - start) + iota, stream);
            const vf kept = load(tail) * blend((vi)(hash >= threshold), splat(scale), splat(0.0f));
            for (int64_t t = i; t < end; t++) out[t] = kept[t - i];
        }
    }
}
