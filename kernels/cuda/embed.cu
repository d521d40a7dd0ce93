// Embedding gather + LayerNorm: out[i] = LayerNorm(word[ids[i]] +
// pos[i % seq] + typ[types[i]]) * gamma + beta for each of ntok tokens.
// An id or type outside its table writes nothing and records the token in
// *err (atomicMin of 2*token + 0 for an id, + 1 for a type) so that the
// host can name the first bad token as kernels.EmbedLayerNormRef does.
#include "common.cuh"

__device__ __forceinline__ bool embed_check(const int* ids, const int* types, long long i, int vocab, int ntypes,
                                            int* err, int* id, int* ty) {
    *id = ids[i];
    *ty = types ? types[i] : 0;
    if (*id < 0 || *id >= vocab) {
        atomicMin(err, (int)(2 * i));
        return false;
    }
    if (*ty < 0 || *ty >= ntypes) {
        atomicMin(err, (int)(2 * i + 1));
        return false;
    }
    return true;
}

// The sum is formed in float in the reference's order: (word + pos) + typ.
__device__ __forceinline__ float embed_sum(const void* word, const void* pos, const void* typ, int edt, int id,
                                           int t, int ty, int hidden, int j) {
    return ldp(word, edt, (long long)id * hidden + j) + ldp(pos, edt, (long long)t * hidden + j) +
           ldp(typ, edt, (long long)ty * hidden + j);
}

// Version 1: one thread per token.
template <typename T>
__device__ void embed_ln1(T* out, const int* ids, const int* types, int ntok, int seq, int hidden, const void* word,
                          const void* pos, const void* typ, int edt, const void* gamma, const void* beta, int pdt,
                          float eps, int vocab, int ntypes, int* err) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= ntok) return;
    int id, ty;
    if (!embed_check(ids, types, i, vocab, ntypes, err, &id, &ty)) return;
    int t = (int)(i % seq);
    float mean = 0.0f;
    for (int j = 0; j < hidden; j++) mean += embed_sum(word, pos, typ, edt, id, t, ty, hidden, j);
    mean /= hidden;
    float var = 0.0f;
    for (int j = 0; j < hidden; j++) {
        float d = embed_sum(word, pos, typ, edt, id, t, ty, hidden, j) - mean;
        var += d * d;
    }
    float inv = 1.0f / sqrtf(var / hidden + eps);
    T* o = out + i * hidden;
    for (int j = 0; j < hidden; j++) {
        float v = embed_sum(word, pos, typ, edt, id, t, ty, hidden, j);
        o[j] = from_f<T>((v - mean) * inv * ldp(gamma, pdt, j) + ldp(beta, pdt, j));
    }
}

// Version 2: one warp per token, lanes striding the hidden dimension.
template <typename T>
__device__ void embed_ln2(T* out, const int* ids, const int* types, int ntok, int seq, int hidden, const void* word,
                          const void* pos, const void* typ, int edt, const void* gamma, const void* beta, int pdt,
                          float eps, int vocab, int ntypes, int* err) {
    long long i = blockIdx.x * (long long)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (i >= ntok) return;  // uniform per warp
    int id, ty;
    bool ok = embed_check(ids, types, i, vocab, ntypes, err, &id, &ty);
    if (!ok) return;  // every lane reads the same id and type: uniform
    int t = (int)(i % seq);
    float sum = 0.0f;
    for (int j = lane; j < hidden; j += 32) sum += embed_sum(word, pos, typ, edt, id, t, ty, hidden, j);
    float mean = warp_sum(sum) / hidden;
    float var = 0.0f;
    for (int j = lane; j < hidden; j += 32) {
        float d = embed_sum(word, pos, typ, edt, id, t, ty, hidden, j) - mean;
        var += d * d;
    }
    float inv = 1.0f / sqrtf(warp_sum(var) / hidden + eps);
    T* o = out + i * hidden;
    for (int j = lane; j < hidden; j += 32) {
        float v = embed_sum(word, pos, typ, edt, id, t, ty, hidden, j);
        o[j] = from_f<T>((v - mean) * inv * ldp(gamma, pdt, j) + ldp(beta, pdt, j));
    }
}

#define EMBED_LN(S, T)                                                                                         \
    extern "C" __global__ void embed_ln1_##S(T* out, const int* ids, const int* types, int ntok, int seq,     \
                                             int hidden, const void* word, const void* pos, const void* typ,  \
                                             int edt, const void* gamma, const void* beta, int pdt, float eps, \
                                             int vocab, int ntypes, int* err) {                               \
        embed_ln1<T>(out, ids, types, ntok, seq, hidden, word, pos, typ, edt, gamma, beta, pdt, eps, vocab,   \
                     ntypes, err);                                                                             \
    }                                                                                                          \
    extern "C" __global__ void embed_ln2_##S(T* out, const int* ids, const int* types, int ntok, int seq,     \
                                             int hidden, const void* word, const void* pos, const void* typ,  \
                                             int edt, const void* gamma, const void* beta, int pdt, float eps, \
                                             int vocab, int ntypes, int* err) {                               \
        embed_ln2<T>(out, ids, types, ntok, seq, hidden, word, pos, typ, edt, gamma, beta, pdt, eps, vocab,   \
                     ntypes, err);                                                                             \
    }
FOR_EACH_T(EMBED_LN)
