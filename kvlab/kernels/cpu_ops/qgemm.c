/* kvlab CPU op: y = x . W^T with W in GGUF block formats, dequantized in registers.
 *
 * W is [N rows][K/32 blocks], one block per 32 consecutive inputs of a row:
 *   Q4_1 (20 bytes): fp16 d, fp16 m, 16 bytes of 4-bit codes (low nibbles = weights 0-15, high
 *                    nibbles = 16-31); weight = d * q + m.
 *   Q8_0 (34 bytes): fp16 d, 32 int8; weight = q * d.
 * Per block and activation row: sum_i (d*q_i + m) x_i = sum_i (d*q_i) x_i + m * sum_i x_i, with
 * d*q_i exact in fp32 (an 11-bit mantissa times a 4- or 8-bit integer), so the result is the fp32
 * model's product up to summation order. x: [M, K] fp32 row-major; y: [M, N] fp32.
 *
 * Work split: OpenMP over output rows (torch's own pool, see paged_decode.c); activation rows in
 * groups of up to 8, each with its 8-lane accumulator, so one dequantized block feeds 8 rows'
 * FMAs before the next is decoded. AVX2 + FMA intrinsics where the compiler targets them
 * (-march=native), a scalar loop otherwise. Returns 0, or 1 for an unknown format or K % 32 != 0.
 */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define KVLAB_AVX2 1
#endif

#define QK 32
#define MROWS 8

static float half_to_float(const uint8_t *p) {
#ifdef KVLAB_AVX2
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
#else
    uint16_t h;
    memcpy(&h, p, 2);
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalize */
            int e = -1;
            uint32_t mm = man;
            do { e++; mm <<= 1; } while (!(mm & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mm & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000 | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
#endif
}

/* Decode one block into 32 floats d*q (Q4_1: the minimum m is returned separately). */
static inline void decode_block(int q4, const uint8_t *b, float *w, float *m) {
    const float d = half_to_float(b);
    if (q4) {
        *m = half_to_float(b + 2);
        const uint8_t *qs = b + 4;
        for (int i = 0; i < 16; i++) {
            w[i] = d * (float)(qs[i] & 0x0f);
            w[i + 16] = d * (float)(qs[i] >> 4);
        }
    } else {
        *m = 0.0f;
        const int8_t *qs = (const int8_t *)(b + 2);
        for (int i = 0; i < 32; i++) w[i] = d * (float)qs[i];
    }
}

/* Rows [r0, r1) of W against activation rows [m0, m0 + mr) (mr <= MROWS). */
static void rows_kernel(int q4, const uint8_t *W, int64_t row_bytes, int64_t nb, const float *x, int64_t K,
                        const float *xsum, int64_t m0, int64_t mr, int64_t r0, int64_t r1, float *y, int64_t N) {
    const int64_t bpb = q4 ? 20 : 34;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = W + r * row_bytes;
        float mterm[MROWS] = {0};
#ifdef KVLAB_AVX2
        if (mr == 1) { /* one activation row: four independent FMA chains, d applied per block */
            const float *xr = x + m0 * K;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = row + b * bpb;
                const __m256 d = _mm256_set1_ps(half_to_float(blk));
                const float *xb = xr + b * QK;
                __m256 q0, q1, q2, q3;
                if (q4) {
                    const __m128i qs = _mm_loadu_si128((const __m128i *)(blk + 4));
                    const __m128i lo = _mm_and_si128(qs, _mm_set1_epi8(0x0f));
                    const __m128i hi = _mm_and_si128(_mm_srli_epi16(qs, 4), _mm_set1_epi8(0x0f));
                    q0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
                    q1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
                    q2 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
                    q3 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
                    mterm[0] += half_to_float(blk + 2) * xsum[m0 * nb + b];
                } else {
                    const __m128i c0 = _mm_loadu_si128((const __m128i *)(blk + 2));
                    const __m128i c1 = _mm_loadu_si128((const __m128i *)(blk + 18));
                    q0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c0));
                    q1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(c0, 8)));
                    q2 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c1));
                    q3 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(c1, 8)));
                }
                /* (d*q) x with d*q exact: the same products as the fp32 model */
                a0 = _mm256_fmadd_ps(_mm256_mul_ps(d, q0), _mm256_loadu_ps(xb), a0);
                a1 = _mm256_fmadd_ps(_mm256_mul_ps(d, q1), _mm256_loadu_ps(xb + 8), a1);
                a2 = _mm256_fmadd_ps(_mm256_mul_ps(d, q2), _mm256_loadu_ps(xb + 16), a2);
                a3 = _mm256_fmadd_ps(_mm256_mul_ps(d, q3), _mm256_loadu_ps(xb + 24), a3);
            }
            const __m256 a = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
            __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
            s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            s = _mm_add_ss(s, _mm_movehdup_ps(s));
            y[m0 * N + r] = _mm_cvtss_f32(s) + mterm[0];
            continue;
        }
        __m256 acc[MROWS];
        for (int64_t j = 0; j < mr; j++) acc[j] = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = row + b * bpb;
            const __m256 d = _mm256_set1_ps(half_to_float(blk));
            __m256 w0, w1, w2, w3;
            if (q4) {
                const __m128i qs = _mm_loadu_si128((const __m128i *)(blk + 4));
                const __m128i lo = _mm_and_si128(qs, _mm_set1_epi8(0x0f));
                const __m128i hi = _mm_and_si128(_mm_srli_epi16(qs, 4), _mm_set1_epi8(0x0f));
                w0 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)));
                w1 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))));
                w2 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)));
                w3 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))));
                const float mb = half_to_float(blk + 2);
                for (int64_t j = 0; j < mr; j++) mterm[j] += mb * xsum[(m0 + j) * nb + b];
            } else {
                const __m128i q0 = _mm_loadu_si128((const __m128i *)(blk + 2));
                const __m128i q1 = _mm_loadu_si128((const __m128i *)(blk + 18));
                w0 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q0)));
                w1 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q0, 8))));
                w2 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q1)));
                w3 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q1, 8))));
            }
            for (int64_t j = 0; j < mr; j++) {
                const float *xb = x + (m0 + j) * K + b * QK;
                __m256 a = acc[j];
                a = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xb), a);
                a = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xb + 8), a);
                a = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xb + 16), a);
                a = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xb + 24), a);
                acc[j] = a;
            }
        }
        for (int64_t j = 0; j < mr; j++) {
            __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[j]), _mm256_extractf128_ps(acc[j], 1));
            s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            s = _mm_add_ss(s, _mm_movehdup_ps(s));
            y[(m0 + j) * N + r] = _mm_cvtss_f32(s) + mterm[j];
        }
#else
        float acc[MROWS] = {0};
        float w[QK];
        for (int64_t b = 0; b < nb; b++) {
            float mb;
            decode_block(q4, row + b * bpb, w, &mb);
            for (int64_t j = 0; j < mr; j++) {
                const float *xb = x + (m0 + j) * K + b * QK;
                float s = 0.0f;
                for (int i = 0; i < QK; i++) s += w[i] * xb[i];
                acc[j] += s;
                if (q4) mterm[j] += mb * xsum[(m0 + j) * nb + b]; /* xsum exists for Q4_1 only */
            }
        }
        for (int64_t j = 0; j < mr; j++) y[(m0 + j) * N + r] = acc[j] + mterm[j];
#endif
    }
}

int kvlab_qgemm(int fmt, const float *x, int64_t M, int64_t K, const uint8_t *W, int64_t N, float *y) {
    if ((fmt != 0 && fmt != 1) || K % QK != 0) return 1; /* 0: Q4_1, 1: Q8_0 */
    const int q4 = fmt == 0;
    const int64_t nb = K / QK, row_bytes = nb * (q4 ? 20 : 34);
    float *xsum = NULL;
    if (q4) { /* per (row, block) sums of x, for the minimum term */
        xsum = (float *)malloc((size_t)(M * nb) * sizeof(float));
        if (!xsum) return 1;
        for (int64_t m = 0; m < M; m++)
            for (int64_t b = 0; b < nb; b++) {
                float s = 0.0f;
                for (int i = 0; i < QK; i++) s += x[m * K + b * QK + i];
                xsum[m * nb + b] = s;
            }
    }
    const int64_t tile = 16;
    const int64_t tiles = (N + tile - 1) / tile;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
        const int64_t r0 = t * tile, r1 = r0 + tile < N ? r0 + tile : N;
        for (int64_t m0 = 0; m0 < M; m0 += MROWS) {
            const int64_t mr = M - m0 < MROWS ? M - m0 : MROWS;
            rows_kernel(q4, W, row_bytes, nb, x, K, xsum, m0, mr, r0, r1, y, N);
        }
    }
    free(xsum);
    return 0;
}
