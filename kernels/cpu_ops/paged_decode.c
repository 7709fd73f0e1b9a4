/* kvlab CPU op: paged decode attention over an fp32 block cache, read in place (no gather).
 *
 * One query token per sequence. Work item = (sequence, KV head): the g query heads that share
 * that KV head walk the sequence's block table one block at a time with an online softmax
 * (running max m, running sum l, rescaled accumulator), so nothing of size context is allocated
 * and every K/V row is read once from where it lives in the cache. OpenMP splits the work items
 * over the threads of the process's OpenMP runtime (torch's own libgomp, by soname), so
 * torch.set_num_threads governs this kernel too.
 *
 * Layouts (all contiguous): q, out [nd, H, hd]; k_cache, v_cache [num_blocks, bs, kvh, hd];
 * tables [nd, tstride] int64 block ids; lens [nd] int64 tokens of context (the new one included).
 * Built with -O3 -march=native -ffast-math -fopenmp by kvlab.kernels.cpu_ops: -ffast-math lets
 * GCC vectorize the dot products and expf (glibc libmvec); the code never relies on inf or NaN
 * (the running max starts at -FLT_MAX, and a block's first rescale is skipped explicitly).
 * Returns 0, or 1 when a size exceeds the stack buffers (the caller then takes the torch path).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>

#define MAX_G 32
#define MAX_HD 256
#define MAX_BS 256

int kvlab_paged_decode_f32(const float *q, const float *k_cache, const float *v_cache,
                           const int64_t *tables, int64_t tstride, const int64_t *lens,
                           int64_t nd, int64_t H, int64_t kvh, int64_t hd, int64_t bs,
                           float scale, float *out) {
    if (kvh <= 0 || H % kvh != 0) return 1;
    const int64_t g = H / kvh;
    if (g > MAX_G || hd > MAX_HD || bs > MAX_BS) return 1;
    const int64_t row = kvh * hd; /* stride between consecutive tokens of one head */
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t task = 0; task < nd * kvh; task++) {
        const int64_t s = task / kvh, h = task % kvh;
        const int64_t len = lens[s];
        const float *qs = q + (s * H + h * g) * hd;
        float m[MAX_G], l[MAX_G], p[MAX_BS];
        float acc[MAX_G * MAX_HD];
        for (int64_t i = 0; i < g; i++) {
            m[i] = -FLT_MAX;
            l[i] = 0.0f;
            for (int64_t c = 0; c < hd; c++) acc[i * hd + c] = 0.0f;
        }
        for (int64_t t0 = 0; t0 < len; t0 += bs) {
            const int64_t n = len - t0 < bs ? len - t0 : bs;
            const int64_t blk = tables[s * tstride + t0 / bs];
            const float *kb = k_cache + blk * bs * row + h * hd;
            const float *vb = v_cache + blk * bs * row + h * hd;
            for (int64_t i = 0; i < g; i++) {
                const float *qi = qs + i * hd;
                float mx = m[i];
                for (int64_t t = 0; t < n; t++) {
                    const float *kt = kb + t * row;
                    float d = 0.0f;
#pragma omp simd reduction(+ : d)
                    for (int64_t c = 0; c < hd; c++) d += qi[c] * kt[c];
                    p[t] = d * scale;
                    mx = p[t] > mx ? p[t] : mx;
                }
                float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
                for (int64_t t = 0; t < n; t++) {
                    p[t] = expf(p[t] - mx);
                    sum += p[t];
                }
                float *a = acc + i * hd;
                if (t0 > 0) { /* rescale what the earlier blocks accumulated to the new max */
                    const float corr = expf(m[i] - mx);
                    l[i] *= corr;
#pragma omp simd
                    for (int64_t c = 0; c < hd; c++) a[c] *= corr;
                }
                l[i] += sum;
                m[i] = mx;
                for (int64_t t = 0; t < n; t++) {
                    const float pt = p[t];
                    const float *vt = vb + t * row;
#pragma omp simd
                    for (int64_t c = 0; c < hd; c++) a[c] += pt * vt[c];
                }
            }
        }
        for (int64_t i = 0; i < g; i++) {
            const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
            float *o = out + (s * H + h * g + i) * hd;
            for (int64_t c = 0; c < hd; c++) o[c] = acc[i * hd + c] * inv;
        }
    }
    return 0;
}
