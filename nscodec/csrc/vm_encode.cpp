// Fused TensoRF vector-matrix (VM) encoding (Chen et al. 2022, "TensoRF", Sec. 3.2, Eq. 3): per plane p in
// (xy, xz, yz) and component c, f[s, p*C + c] = M_p,c(u, v) * V_p,c(w), M bilinear and V linear in the grid
// (align_corners=True, zero padding outside the grid), with (u, v, w) = (x, y, z), (x, z, y), (y, z, x).
//
// The twin is nerfstudio's TensorVMEncoding.forward (two grid_sample calls; tests/test_kernel_twins.py compares the
// values and both gradients). The kernel reads channel-last copies of the factors — planes [3, N, N, C], lines
// [3, N, C] — so every corner is one contiguous run of C floats instead of C reads N^2 apart.
// Forward: parallel over samples. Backward: parallel over (plane, block of kBlockC channels) tasks, each one walking
// every sample in order, so the gradients are deterministic and independent of the thread count.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/extension.h>

#include <cmath>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int kLanes = Vec::size();
constexpr int64_t kBlockC = kLanes;  // one SIMD vector of channels per backward task

// Coordinate axes of the plane (u: width, v: height) and of its line (w) for plane p.
constexpr int kU[3] = {0, 0, 1};
constexpr int kV[3] = {1, 2, 2};
constexpr int kW[3] = {2, 1, 0};

// Linear interpolation support of coordinate t in [-1, 1] on n grid points (align_corners=True): the lower index,
// and the weights of it and the next one, each 0 where that point lies outside the grid (zero padding).
struct Support {
  int64_t i0;
  float w0, w1;
};

inline Support support(float t, int64_t n) {
  t = std::fmin(std::fmax(t, -3.0f), 3.0f);  // beyond a grid's width outside: zero weights either way, no overflow
  const float x = (t + 1.0f) * 0.5f * static_cast<float>(n - 1);
  const float f = std::floor(x);
  Support s;
  s.i0 = static_cast<int64_t>(f);
  const float frac = x - f;
  s.w0 = (s.i0 >= 0 && s.i0 < n) ? 1.0f - frac : 0.0f;
  s.w1 = (s.i0 + 1 >= 0 && s.i0 + 1 < n) ? frac : 0.0f;
  return s;
}

inline int64_t clampi(int64_t i, int64_t n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

// Everything one sample needs for plane p: the four plane corners (row-major offsets into [N, N] times C) with
// weights, and the two line points with weights. Out-of-grid corners get weight 0 and a clamped (valid) offset.
struct Taps {
  int64_t plane[4];
  float pw[4];
  int64_t line[2];
  float lw[2];
};

inline bool finite3(const float* x) { return std::isfinite(x[0]) && std::isfinite(x[1]) && std::isfinite(x[2]); }

inline Taps taps(const float* x, int p, int64_t N, int64_t C) {
  const Support su = support(x[kU[p]], N), sv = support(x[kV[p]], N), sw = support(x[kW[p]], N);
  Taps t;
  const int64_t u0 = clampi(su.i0, N), u1 = clampi(su.i0 + 1, N);
  const int64_t v0 = clampi(sv.i0, N), v1 = clampi(sv.i0 + 1, N);
  t.plane[0] = (v0 * N + u0) * C;
  t.plane[1] = (v0 * N + u1) * C;
  t.plane[2] = (v1 * N + u0) * C;
  t.plane[3] = (v1 * N + u1) * C;
  t.pw[0] = su.w0 * sv.w0;
  t.pw[1] = su.w1 * sv.w0;
  t.pw[2] = su.w0 * sv.w1;
  t.pw[3] = su.w1 * sv.w1;
  t.line[0] = clampi(sw.i0, N) * C;
  t.line[1] = clampi(sw.i0 + 1, N) * C;
  t.lw[0] = sw.w0;
  t.lw[1] = sw.w1;
  return t;
}

void check(const torch::Tensor& planes, const torch::Tensor& lines, const torch::Tensor& x) {
  TORCH_CHECK(planes.dim() == 4 && planes.size(0) == 3 && planes.size(1) == planes.size(2) &&
                  planes.dtype() == torch::kFloat32 && planes.is_contiguous(),
              "vm encode: planes must be a contiguous float32 [3, N, N, C] tensor");
  TORCH_CHECK(lines.dim() == 3 && lines.size(0) == 3 && lines.size(1) == planes.size(1) &&
                  lines.size(2) == planes.size(3) && lines.dtype() == torch::kFloat32 && lines.is_contiguous(),
              "vm encode: lines must be a contiguous float32 [3, N, C] tensor matching the planes");
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 3 && x.dtype() == torch::kFloat32 && x.is_contiguous(),
              "vm encode: positions must be a contiguous float32 [S, 3] tensor");
  TORCH_CHECK(planes.size(1) >= 2, "vm encode: the grid needs at least 2 points per axis");
}

}  // namespace

// Features [S, 3C] at positions x [S, 3] in [-1, 1]^3 (non-finite positions give 0, as outside the grid).
torch::Tensor vm_encode_forward(torch::Tensor planes, torch::Tensor lines, torch::Tensor x) {
  check(planes, lines, x);
  const int64_t S = x.size(0), N = planes.size(1), C = planes.size(3);
  auto out = torch::zeros({S, 3 * C}, planes.options());
  const float* P = planes.data_ptr<float>();
  const float* L = lines.data_ptr<float>();
  const float* X = x.data_ptr<float>();
  float* O = out.data_ptr<float>();
  const int64_t cv = C - C % kLanes;
  at::parallel_for(0, S, 256, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      const float* xs = X + 3 * s;
      if (!finite3(xs)) continue;
      for (int p = 0; p < 3; ++p) {
        const Taps t = taps(xs, p, N, C);
        const float* Pp = P + p * N * N * C;
        const float* Lp = L + p * N * C;
        float* o = O + s * 3 * C + p * C;
        int64_t c = 0;
        for (; c < cv; c += kLanes) {
          Vec m = Vec(t.pw[0]) * Vec::loadu(Pp + t.plane[0] + c);
          m = m + Vec(t.pw[1]) * Vec::loadu(Pp + t.plane[1] + c);
          m = m + Vec(t.pw[2]) * Vec::loadu(Pp + t.plane[2] + c);
          m = m + Vec(t.pw[3]) * Vec::loadu(Pp + t.plane[3] + c);
          const Vec v = Vec(t.lw[0]) * Vec::loadu(Lp + t.line[0] + c) + Vec(t.lw[1]) * Vec::loadu(Lp + t.line[1] + c);
          (m * v).store(o + c);
        }
        for (; c < C; ++c) {
          float m = t.pw[0] * Pp[t.plane[0] + c];
          m = m + t.pw[1] * Pp[t.plane[1] + c];
          m = m + t.pw[2] * Pp[t.plane[2] + c];
          m = m + t.pw[3] * Pp[t.plane[3] + c];
          const float v = t.lw[0] * Lp[t.line[0] + c] + t.lw[1] * Lp[t.line[1] + c];
          o[c] = m * v;
        }
      }
    }
  });
  return out;
}

// Gradients (planes [3, N, N, C], lines [3, N, C], channel-last) of sum(grad * features).
std::vector<torch::Tensor> vm_encode_backward(torch::Tensor grad, torch::Tensor planes, torch::Tensor lines,
                                              torch::Tensor x) {
  check(planes, lines, x);
  const int64_t S = x.size(0), N = planes.size(1), C = planes.size(3);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == S && grad.size(1) == 3 * C && grad.dtype() == torch::kFloat32 &&
                  grad.is_contiguous(),
              "vm encode: the gradient must be a contiguous float32 [S, 3C] tensor");
  auto gP = torch::zeros_like(planes);
  auto gL = torch::zeros_like(lines);
  const float* P = planes.data_ptr<float>();
  const float* L = lines.data_ptr<float>();
  const float* X = x.data_ptr<float>();
  const float* G = grad.data_ptr<float>();
  float* GP = gP.data_ptr<float>();
  float* GL = gL.data_ptr<float>();
  // the taps of every (plane, sample) once, in parallel; then the channel blocks scatter without races
  std::vector<Taps> all(static_cast<size_t>(3 * S));
  std::vector<char> ok(static_cast<size_t>(S));
  at::parallel_for(0, S, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      ok[s] = finite3(X + 3 * s);
      if (ok[s])
        for (int p = 0; p < 3; ++p) all[p * S + s] = taps(X + 3 * s, p, N, C);
    }
  });
  const int64_t blocks = (C + kBlockC - 1) / kBlockC;
  at::parallel_for(0, 3 * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int p = static_cast<int>(task / blocks);
      const int64_t c0 = (task % blocks) * kBlockC, c1 = std::min(C, c0 + kBlockC);
      const float* Pp = P + p * N * N * C;
      const float* Lp = L + p * N * C;
      float* GPp = GP + p * N * N * C;
      float* GLp = GL + p * N * C;
      const Taps* tp = all.data() + p * S;
      for (int64_t s = 0; s < S; ++s) {
        if (!ok[s]) continue;
        const Taps& t = tp[s];
        const float* g = G + s * 3 * C + p * C;
        if (c1 - c0 == kLanes) {
          const int64_t c = c0;
          Vec m = Vec(t.pw[0]) * Vec::loadu(Pp + t.plane[0] + c);
          m = m + Vec(t.pw[1]) * Vec::loadu(Pp + t.plane[1] + c);
          m = m + Vec(t.pw[2]) * Vec::loadu(Pp + t.plane[2] + c);
          m = m + Vec(t.pw[3]) * Vec::loadu(Pp + t.plane[3] + c);
          const Vec v = Vec(t.lw[0]) * Vec::loadu(Lp + t.line[0] + c) + Vec(t.lw[1]) * Vec::loadu(Lp + t.line[1] + c);
          const Vec gs = Vec::loadu(g + c);
          const Vec gm = gs * v, gv = gs * m;
          for (int k = 0; k < 4; ++k) {
            float* dst = GPp + t.plane[k] + c;
            (Vec::loadu(dst) + Vec(t.pw[k]) * gm).store(dst);
          }
          for (int k = 0; k < 2; ++k) {
            float* dst = GLp + t.line[k] + c;
            (Vec::loadu(dst) + Vec(t.lw[k]) * gv).store(dst);
          }
          continue;
        }
        for (int64_t c = c0; c < c1; ++c) {
          float m = t.pw[0] * Pp[t.plane[0] + c];
          m = m + t.pw[1] * Pp[t.plane[1] + c];
          m = m + t.pw[2] * Pp[t.plane[2] + c];
          m = m + t.pw[3] * Pp[t.plane[3] + c];
          const float v = t.lw[0] * Lp[t.line[0] + c] + t.lw[1] * Lp[t.line[1] + c];
          const float gm = g[c] * v, gv = g[c] * m;
          for (int k = 0; k < 4; ++k) GPp[t.plane[k] + c] += t.pw[k] * gm;
          GLp[t.line[0] + c] += t.lw[0] * gv;
          GLp[t.line[1] + c] += t.lw[1] * gv;
        }
      }
    }
  });
  return {gP, gL};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("vm_encode_forward", &vm_encode_forward, "TensoRF VM encoding, features [S, 3C] (channel-last factors)");
  m.def("vm_encode_backward", &vm_encode_backward, "TensoRF VM encoding, factor gradients (channel-last)");
}
