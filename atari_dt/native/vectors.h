/* What the C kernels share: vectors of W floats in GCC/Clang vector extensions (one AVX512
 * register, two AVX2 ones, four NEON ones; the compiler picks with -march=native), their
 * loads, stores and selects, exp on them, and the integer hashes of the counter-based dropout
 * masks. */
#ifndef ATARI_DT_VECTORS_H
#define ATARI_DT_VECTORS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <float.h>
#include <math.h>

#define W 16 /* floats per vector */
typedef float vf __attribute__((vector_size(4 * W)));
typedef float vf_unaligned __attribute__((vector_size(4 * W), aligned(4)));
typedef int32_t vi __attribute__((vector_size(4 * W)));
typedef uint32_t vu __attribute__((vector_size(4 * W)));

#define IOTA ((vf){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}) /* W = 16 lanes */

static inline vf load(const float *p) { return *(const vf_unaligned *)p; }
static inline void store(float *p, vf x) { *(vf_unaligned *)p = x; }
static inline vf splat(float x) { return (vf){0} + x; }
static inline vf blend(vi mask, vf yes, vf no) { /* mask lanes are all ones or zeros */
    return (vf)(((vi)yes & mask) | ((vi)no & ~mask));
}
static inline float max_lane(vf x) {
    float m = x[0];
    for (int k = 1; k < W; k++) m = x[k] > m ? x[k] : m;
    return m;
}
static inline float sum_lanes(vf x) {
    float total = 0.0f;
    for (int k = 0; k < W; k++) total += x[k];
    return total;
}

static inline vf exp_nonpositive(vf x) {
    /* exp(x) for x <= 0 (x > 0 is taken as 0); below -87 it returns 0 (the true value is
     * under 2^-125: keeping it would make subnormal products in the backward, slow on some
     * CPUs). */
    const vi underflow = x < splat(-87.0f);
    x = blend(underflow, splat(-87.0f), x);
    x = blend(x > splat(0.0f), splat(0.0f), x);
    /* floor(x log2e + 0.5) by truncation: the argument of the cast is > 0 here */
    const vi n_int = __builtin_convertvector(x * 1.44269504088896341f + 127.5f, vi) - 127;
    const vf n = __builtin_convertvector(n_int, vf);
    const vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
    vf y = splat(1.9875691500e-4f);
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    return blend(underflow, splat(0.0f), y * (vf)((n_int + 127) << 23)); /* y 2^n, n >= -126 */
}

static inline vu mix32(vu x) { /* murmur3's finaliser: a bijection on 32 bits, per lane */
    x ^= x >> 16; x *= 0x85ebca6bu; x ^= x >> 13; x *= 0xc2b2ae35u; x ^= x >> 16;
    return x;
}

static inline uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The seed of stream `index` of `seed` (a (window, head) pair's, a tensor's 2^32-element chunk). */
static inline uint64_t stream_seed(uint64_t seed, int64_t index) {
    return splitmix64(seed ^ splitmix64((uint64_t)index));
}

/* The hash of element `counter` of the stream `seed`: a kept element is one whose hash is
 * >= threshold (probability 1 - threshold / 2^32). Two rounds of murmur3's finaliser around
 * the seed's two halves, so streams of nearby seeds are not shifted copies of each other. */
static inline vu counter_hash(vu counter, uint64_t seed) {
    return mix32(mix32(counter * 0x9e3779b1u + (uint32_t)seed) ^ (uint32_t)(seed >> 32));
}

#endif
