// Fused multi-resolution grid encodings on CPU (ATen's thread pool: torch.set_num_threads applies): SHACIRA's hash grid (Instant-NGP, Mueller et al. 2022,
// Sec. 3, Eqs. 2-4) and VQ-AD's dense vertex levels (Takikawa et al. 2022, Sec. 4.3, Eqs. 6-9).
//
// Each function has a plain-torch reference twin in nscodec/grid/_torch_impl.py with the same vertices, hash and
// trilinear weights; tests/test_kernel_twins.py compares values and gradients. Built at first use by
// nscodec/grid/_wrapper.py (torch.utils.cpp_extension.load).
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <vector>


namespace {

constexpr uint32_t kPrime1 = 2654435761u;  // Instant-NGP's pi_2 (pi_1 = 1)
constexpr uint32_t kPrime2 = 805459861u;   // pi_3

struct HashLevels {
  const float* scale;     // [L] resolution of each level (nerfstudio: floor(min_res * b^l))
  const int64_t* offset;  // [L] first row of each level in the concatenated table
  const int32_t* verts;   // [L] vertices per axis (R_l + 1) for dense levels, 0 for hashed levels
  uint32_t mask;          // T - 1 (T a power of two)
};

// A position coordinate clamped to [0, 1], NaN read as 0: a non-finite sample
// must never index outside a table (the torch twin does the same: _torch_impl.unit_positions).
inline float unit(float v) { return v >= 0.0f ? (v <= 1.0f ? v : 1.0f) : 0.0f; }

// The 8 rows and trilinear weights of point p at level l, in nerfstudio's corner order k = 4a + 2b + c
// (a, b, c: x, y, z; 0 = floor, 1 = ceil) with weights (wx * wy) * wz, as HashEncoding.pytorch_fwd.
inline void hash_corners(const float* p, int l, const HashLevels& lv, int64_t* rows, float* wts) {
  const float s = lv.scale[l];
  int32_t lo[3], hi[3];
  float w[3][2];
  for (int d = 0; d < 3; ++d) {
    const float v = unit(p[d]) * s;
    const float f = std::floor(v);
    lo[d] = static_cast<int32_t>(f);
    hi[d] = static_cast<int32_t>(std::ceil(v));
    const float off = v - f;
    w[d][0] = 1.0f - off;
    w[d][1] = off;
  }
  const int32_t n = lv.verts[l];
  for (int a = 0; a < 2; ++a) {
    const int32_t x = a ? hi[0] : lo[0];
    for (int b = 0; b < 2; ++b) {
      const int32_t y = b ? hi[1] : lo[1];
      const float wxy = w[0][a] * w[1][b];
      for (int c = 0; c < 2; ++c) {
        const int32_t z = c ? hi[2] : lo[2];
        int64_t r;
        if (n > 0) {
          r = static_cast<int64_t>(x) + static_cast<int64_t>(y) * n + static_cast<int64_t>(z) * n * n;
        } else {
          const uint32_t h = static_cast<uint32_t>(x) ^ (static_cast<uint32_t>(y) * kPrime1) ^
                             (static_cast<uint32_t>(z) * kPrime2);
          r = static_cast<int64_t>(h & lv.mask);
        }
        const int k = 4 * a + 2 * b + c;
        rows[k] = r + lv.offset[l];
        wts[k] = wxy * w[2][c];
      }
    }
  }
}

HashLevels hash_levels(const torch::Tensor& scale, const torch::Tensor& offset, const torch::Tensor& verts,
                       int64_t table_size) {
  TORCH_CHECK(scale.dtype() == torch::kFloat32 && offset.dtype() == torch::kInt64 && verts.dtype() == torch::kInt32,
              "hash grid: level tensors must be float32 / int64 / int32");
  TORCH_CHECK(table_size > 0 && (table_size & (table_size - 1)) == 0, "hash grid: table size must be a power of two");
  return HashLevels{scale.data_ptr<float>(), offset.data_ptr<int64_t>(), verts.data_ptr<int32_t>(),
                    static_cast<uint32_t>(table_size - 1)};
}

void check_points(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 3 && x.dtype() == torch::kFloat32 && x.is_contiguous(),
              "grid encoding: positions must be a contiguous float32 [N, 3] tensor");
}

void check_table(const torch::Tensor& t) {
  TORCH_CHECK(t.dim() == 2 && t.dtype() == torch::kFloat32 && t.is_contiguous(),
              "grid encoding: table must be a contiguous float32 [R, F] tensor");
}

}  // namespace

// out [N, L, F]: levels >= active are zero (SHACIRA Sec. 4.5 level of detail).
torch::Tensor hash_encode_forward(torch::Tensor x, torch::Tensor table, torch::Tensor scale, torch::Tensor offset,
                                  torch::Tensor verts, int64_t table_size, int64_t active) {
  check_points(x);
  check_table(table);
  const HashLevels lv = hash_levels(scale, offset, verts, table_size);
  const int64_t N = x.size(0), L = scale.size(0), F = table.size(1);
  auto out = torch::zeros({N, L, F}, x.options());
  const float* px = x.data_ptr<float>();
  const float* tb = table.data_ptr<float>();
  float* po = out.data_ptr<float>();
  const int64_t act = std::min<int64_t>(std::max<int64_t>(active, 0), L);
  at::parallel_for(0, N, 1024, [&](int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    int64_t rows[8];
    float wts[8];
    for (int64_t l = 0; l < act; ++l) {
      hash_corners(px + 3 * i, static_cast<int>(l), lv, rows, wts);
      float* o = po + (i * L + l) * F;
      for (int k = 0; k < 8; ++k) {
        const float* row = tb + rows[k] * F;
        for (int64_t f = 0; f < F; ++f) o[f] += wts[k] * row[f];
      }
    }
  }
  });
  return out;
}

// d loss / d table [R, F] from grad [N, L, F]. Levels own disjoint row ranges, so threads split the levels and
// no two threads write one row (no atomics; the sum over points runs in point order: deterministic).
torch::Tensor hash_encode_backward(torch::Tensor grad, torch::Tensor x, int64_t num_rows, torch::Tensor scale,
                                   torch::Tensor offset, torch::Tensor verts, int64_t table_size, int64_t active) {
  check_points(x);
  TORCH_CHECK(grad.dim() == 3 && grad.dtype() == torch::kFloat32 && grad.is_contiguous() && grad.size(0) == x.size(0),
              "hash grid backward: grad must be a contiguous float32 [N, L, F] tensor");
  const HashLevels lv = hash_levels(scale, offset, verts, table_size);
  const int64_t N = x.size(0), L = grad.size(1), F = grad.size(2);
  auto gt = torch::zeros({num_rows, F}, grad.options());
  const float* px = x.data_ptr<float>();
  const float* pg = grad.data_ptr<float>();
  float* out = gt.data_ptr<float>();
  const int64_t act = std::min<int64_t>(std::max<int64_t>(active, 0), L);
  at::parallel_for(0, act, 1, [&](int64_t lbegin, int64_t lend) {
  for (int64_t l = lbegin; l < lend; ++l) {
    int64_t rows[8];
    float wts[8];
    for (int64_t i = 0; i < N; ++i) {
      const float* g = pg + (i * L + l) * F;
      hash_corners(px + 3 * i, static_cast<int>(l), lv, rows, wts);
      for (int k = 0; k < 8; ++k) {
        float* row = out + rows[k] * F;
        for (int64_t f = 0; f < F; ++f) row[f] += wts[k] * g[f];
      }
    }
  }
  });
  return gt;
}

// ---------------------------------------------------------------------------------------------- dense VQ-AD levels
// A level of res cells per axis has (res+1)^3 vertices, x-major (z fastest): v = (i*n + j)*n + k, n = res + 1.
// The lower corner is floor(p * res) clamped to [0, res-1], so p = 1 interpolates inside the last cell.
namespace {
inline void dense_corners(const float* p, int64_t res, int64_t* lin, float* wts) {
  int64_t i0[3];
  float w[3][2];
  for (int d = 0; d < 3; ++d) {
    const float q = unit(p[d]) * static_cast<float>(res);
    float f = std::floor(q);
    f = std::min(std::max(f, 0.0f), static_cast<float>(res - 1));
    i0[d] = static_cast<int64_t>(f);
    const float frac = q - f;
    w[d][0] = 1.0f - frac;
    w[d][1] = frac;
  }
  const int64_t n = res + 1;
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b)
      for (int c = 0; c < 2; ++c) {
        const int k = 4 * a + 2 * b + c;
        lin[k] = ((i0[0] + a) * n + (i0[1] + b)) * n + (i0[2] + c);
        wts[k] = (w[0][a] * w[1][b]) * w[2][c];
      }
}
}  // namespace

// Corner vertex ids [S, 8] (int64) and weights [S, 8] of one dense level (for the VQ backward in torch).
std::vector<torch::Tensor> dense_level_corners(torch::Tensor x, int64_t res) {
  check_points(x);
  TORCH_CHECK(res >= 1, "dense level: res must be >= 1");
  const int64_t S = x.size(0);
  auto lin = torch::empty({S, 8}, x.options().dtype(torch::kInt64));
  auto w = torch::empty({S, 8}, x.options());
  const float* px = x.data_ptr<float>();
  int64_t* pl = lin.data_ptr<int64_t>();
  float* pw = w.data_ptr<float>();
  at::parallel_for(0, S, 2048, [&](int64_t b, int64_t e) {
    for (int64_t s = b; s < e; ++s) dense_corners(px + 3 * s, res, pl + 8 * s, pw + 8 * s);
  });
  return {lin, w};
}

// out [S, k] += sum_c w_c * table[row(v_c)], row(v) = v (indices undefined) or indices[v] (VQ / hash codebooks).
void dense_level_forward_(torch::Tensor out, torch::Tensor x, torch::Tensor table, torch::Tensor indices, int64_t res) {
  check_points(x);
  check_table(table);
  TORCH_CHECK(out.dim() == 2 && out.size(0) == x.size(0) && out.size(1) == table.size(1) && out.is_contiguous() &&
                  out.dtype() == torch::kFloat32,
              "dense level: out must be a contiguous float32 [S, k] tensor");
  const bool indirect = indices.defined() && indices.numel() > 0;
  const int64_t m = (res + 1) * (res + 1) * (res + 1);
  if (indirect) {
    TORCH_CHECK(indices.dtype() == torch::kInt64 && indices.is_contiguous() && indices.numel() == m,
                "dense level: indices must be a contiguous int64 [(res+1)^3] tensor");
  } else {
    TORCH_CHECK(table.size(0) == m, "dense level: table must have (res+1)^3 rows");
  }
  const int64_t S = x.size(0), K = table.size(1);
  const float* px = x.data_ptr<float>();
  const float* tb = table.data_ptr<float>();
  const int64_t* ix = indirect ? indices.data_ptr<int64_t>() : nullptr;
  float* po = out.data_ptr<float>();
  at::parallel_for(0, S, 1024, [&](int64_t b, int64_t e) {
  for (int64_t s = b; s < e; ++s) {
    int64_t lin[8];
    float wts[8];
    dense_corners(px + 3 * s, res, lin, wts);
    float* o = po + s * K;
    for (int c = 0; c < 8; ++c) {
      const float* row = tb + (indirect ? ix[lin[c]] : lin[c]) * K;
      for (int64_t f = 0; f < K; ++f) o[f] += wts[c] * row[f];
    }
  }
  });
}

// Gradient per vertex read: (u [U] sorted vertex ids, G [U, k]) with G[v] = sum over (s, c) reading u[v] of
// w_c * grad[s]; no sort. Up to 2^18 vertices a per-vertex table numbers the vertices read (O(S + m)); above, a
// bitmap of the m vertices (m / 8 bytes: 262 KB for 128^3 cells, cache-resident, where the table would be 8.6 MB)
// marks them and a vertex's row is its rank among the marked ones (O(S + m / 64)). The sum runs in sample order.
std::vector<torch::Tensor> dense_level_vertex_grads(torch::Tensor grad, torch::Tensor x, int64_t res) {
  check_points(x);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == x.size(0) && grad.is_contiguous() && grad.dtype() == torch::kFloat32,
              "dense level backward: grad must be a contiguous float32 [S, k] tensor");
  const int64_t S = x.size(0), K = grad.size(1);
  const int64_t m = (res + 1) * (res + 1) * (res + 1);
  auto lin = torch::empty({S, 8}, x.options().dtype(torch::kInt64));
  auto wt = torch::empty({S, 8}, x.options());
  const float* px = x.data_ptr<float>();
  int64_t* pl = lin.data_ptr<int64_t>();
  float* pw = wt.data_ptr<float>();
  at::parallel_for(0, S, 2048, [&](int64_t b, int64_t e) {
    for (int64_t s = b; s < e; ++s) dense_corners(px + 3 * s, res, pl + 8 * s, pw + 8 * s);
  });
  // row[j]: the output row of entry j (its vertex's rank among the vertices read)
  std::vector<int32_t> row(static_cast<size_t>(8 * S));
  int64_t U = 0;
  torch::Tensor u;
  if (m <= (int64_t{1} << 18)) {  // a per-vertex table fits in cache: mark, number, look up
    std::vector<int32_t> pos(static_cast<size_t>(m), -1);
    for (int64_t j = 0; j < 8 * S; ++j) pos[pl[j]] = 0;
    for (int64_t v = 0; v < m; ++v)
      if (pos[v] == 0) pos[v] = static_cast<int32_t>(U++);
    u = torch::empty({U}, x.options().dtype(torch::kInt64));
    int64_t* pu = u.data_ptr<int64_t>();
    for (int64_t v = 0; v < m; ++v)
      if (pos[v] >= 0) pu[pos[v]] = v;
    for (int64_t j = 0; j < 8 * S; ++j) row[j] = pos[pl[j]];
  } else {  // a bitmap of the vertices, ranks from the words' running popcounts
    const int64_t words = (m + 63) / 64;
    std::vector<uint64_t> bits(static_cast<size_t>(words), 0);
    for (int64_t j = 0; j < 8 * S; ++j) bits[pl[j] >> 6] |= uint64_t{1} << (pl[j] & 63);
    std::vector<int64_t> before(static_cast<size_t>(words));  // vertices read in the words before each word
    for (int64_t w = 0; w < words; ++w) {
      before[w] = U;
      U += __builtin_popcountll(bits[w]);
    }
    u = torch::empty({U}, x.options().dtype(torch::kInt64));
    int64_t* pu = u.data_ptr<int64_t>();
    for (int64_t w = 0, j = 0; w < words; ++w)
      for (uint64_t b = bits[w]; b != 0; b &= b - 1) pu[j++] = 64 * w + __builtin_ctzll(b);
    at::parallel_for(0, 8 * S, 16384, [&](int64_t jb, int64_t je) {
      for (int64_t j = jb; j < je; ++j) {
        const int64_t v = pl[j];
        row[j] = static_cast<int32_t>(before[v >> 6] + __builtin_popcountll(bits[v >> 6] & ((uint64_t{1} << (v & 63)) - 1)));
      }
    });
  }
  auto G = torch::zeros({U, K}, grad.options());
  float* pG = G.data_ptr<float>();
  const float* pg = grad.data_ptr<float>();
  for (int64_t s = 0; s < S; ++s) {
    const float* g = pg + s * K;
    for (int c = 0; c < 8; ++c) {
      float* r = pG + static_cast<int64_t>(row[8 * s + c]) * K;
      const float w = pw[8 * s + c];
      for (int64_t f = 0; f < K; ++f) r[f] += w * g[f];
    }
  }
  return {u, G};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("hash_encode_forward", &hash_encode_forward, "multi-resolution hash grid, forward [N, L, F]");
  m.def("hash_encode_backward", &hash_encode_backward, "multi-resolution hash grid, table gradient [R, F]");
  m.def("dense_level_corners", &dense_level_corners, "dense level corner vertex ids and weights [S, 8]");
  m.def("dense_level_forward_", &dense_level_forward_, "dense level trilinear lookup, accumulated into out");
  m.def("dense_level_vertex_grads", &dense_level_vertex_grads, "dense level gradient per vertex read");
}
