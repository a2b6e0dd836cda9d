// Fused rate of a fully factorized learned density (Balle et al. 2018, "Variational image compression with a scale
// hyperprior", Appendix 6.1): per channel c, CDF(x) = sigmoid(f_K(...f_0(x))), f_k(x) = g_k(H_k x + b_k),
// g_k(z) = z + a_k * tanh(z) for k < K; P(y) = |CDF(y + 1/2) - CDF(y - 1/2)| bounded below, rate = -sum log2 P.
//
// The twin is nscodec.coding.entropy_models.FactorizedPrior.likelihood (plain torch); tests/test_kernel_twins.py
// compares values and every gradient. H_k = softplus(matrix_k) and a_k = tanh(factor_k) are formed by the caller.
// Per-channel parameter gradients are summed per fixed-size block of latents, then the blocks in order, so the
// result does not depend on the number of threads. Latents are processed a SIMD vector at a time (ATen's
// Vectorized<float>: AVX2 / AVX-512 with SLEEF's tanh/exp where the build enables them, scalar otherwise).
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/extension.h>

#include <cmath>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int kLanes = Vec::size();
constexpr int kMaxWidth = 16;
constexpr int kMaxLayers = 8;
constexpr int64_t kBlock = 4096;  // a multiple of kLanes

struct Net {
  int layers;                   // K + 1
  int width[kMaxLayers + 1];    // width[0] = 1, width[K+1] = 1
  const float* H[kMaxLayers];   // [C, w_{k+1}, w_k]
  const float* b[kMaxLayers];   // [C, w_{k+1}]
  const float* a[kMaxLayers];   // [C, w_{k+1}] (k < K)
  int hoff[kMaxLayers], boff[kMaxLayers], aoff[kMaxLayers];  // offsets into a channel's gradient vector
  int nparams;                  // per channel
};

// Activations of one evaluation: tanh(z[k][j]) and the layer outputs x[k][j] (x of the last layer = the logit).
struct Acts {
  Vec th[kMaxLayers][kMaxWidth];
  Vec x[kMaxLayers][kMaxWidth];
};

// tanh(z) = sign(z) (1 - 2 / (exp(2|z|) + 1)) (one SLEEF exp instead of SLEEF's tanh, ~2x cheaper); below
// |z| < 2^-6 the Taylor form z - z^3/3 avoids the cancellation of 1 - 2/(e^{2|z|} + 1).
inline Vec fast_tanh(const Vec& z) {
  const Vec one(1.0f), two(2.0f), zero(0.0f);
  const Vec az = z.abs();
  const Vec t = one - two / ((two * az).exp() + one);  // tanh |z|
  const Vec signed_t = Vec::blendv(t, zero - t, z < zero);
  const Vec small = z - z * z * z * Vec(1.0f / 3.0f);
  return Vec::blendv(signed_t, small, az < Vec(0.015625f));
}

inline Vec logits_at(const Net& n, int64_t c, const Vec& t, Acts& s) {
  Vec in[kMaxWidth];
  in[0] = t;
  for (int k = 0; k < n.layers; ++k) {
    const int wi = n.width[k], wo = n.width[k + 1];
    const float* H = n.H[k] + c * wo * wi;
    const float* b = n.b[k] + c * wo;
    for (int j = 0; j < wo; ++j) {
      Vec acc(b[j]);
      for (int i = 0; i < wi; ++i) acc = acc + Vec(H[j * wi + i]) * in[i];
      if (k + 1 < n.layers) {
        const Vec th = fast_tanh(acc);
        s.th[k][j] = th;
        s.x[k][j] = acc + Vec(n.a[k][c * wo + j]) * th;
      } else {
        s.x[k][j] = acc;
      }
    }
    for (int j = 0; j < wo; ++j) in[j] = s.x[k][j];
  }
  return s.x[n.layers - 1][0];
}

// Back-propagate d(out)/d(logit) = g through one evaluation at input t; adds to the per-parameter accumulators
// and returns d(out)/dt.
inline Vec backprop(const Net& n, int64_t c, const Vec& t, const Acts& s, const Vec& g, Vec* acc) {
  Vec gz[kMaxWidth], gx[kMaxWidth];
  gx[0] = g;
  const Vec one(1.0f);
  for (int k = n.layers - 1; k >= 0; --k) {
    const int wi = n.width[k], wo = n.width[k + 1];
    for (int j = 0; j < wo; ++j) {
      if (k + 1 < n.layers) {
        const Vec th = s.th[k][j];
        acc[n.aoff[k] + j] = acc[n.aoff[k] + j] + gx[j] * th;
        gz[j] = gx[j] * (one + Vec(n.a[k][c * wo + j]) * (one - th * th));
      } else {
        gz[j] = gx[j];
      }
    }
    const float* H = n.H[k] + c * wo * wi;
    Vec gin[kMaxWidth];
    for (int i = 0; i < wi; ++i) gin[i] = Vec(0.0f);
    for (int j = 0; j < wo; ++j) {
      acc[n.boff[k] + j] = acc[n.boff[k] + j] + gz[j];
      for (int i = 0; i < wi; ++i) {
        const Vec xin = (k == 0) ? t : s.x[k - 1][i];
        acc[n.hoff[k] + j * wi + i] = acc[n.hoff[k] + j * wi + i] + gz[j] * xin;
        gin[i] = gin[i] + Vec(H[j * wi + i]) * gz[j];
      }
    }
    for (int i = 0; i < wi; ++i) gx[i] = gin[i];
  }
  return gx[0];
}

inline Vec sigmoid(const Vec& x) {
  const Vec one(1.0f);
  return one / (one + (Vec(0.0f) - x).exp());
}

// Lanes [0, count) set to 1, the rest 0.
inline Vec lane_mask(int count) {
  alignas(64) float m[kLanes];
  for (int i = 0; i < kLanes; ++i) m[i] = i < count ? 1.0f : 0.0f;
  return Vec::loadu(m);
}

inline float lane_sum(const Vec& v) {
  alignas(64) float m[kLanes];
  v.store(m);
  float s = 0.0f;
  for (int i = 0; i < kLanes; ++i) s += m[i];
  return s;
}

Net make_net(const std::vector<torch::Tensor>& H, const std::vector<torch::Tensor>& b,
             const std::vector<torch::Tensor>& a, int64_t C) {
  Net n;
  TORCH_CHECK(!H.empty() && H.size() <= kMaxLayers && b.size() == H.size() && a.size() + 1 == H.size(),
              "factorized rate: need K+1 matrices and biases and K factors (K+1 <= 8)");
  n.layers = static_cast<int>(H.size());
  n.width[0] = 1;
  int off = 0;
  for (int k = 0; k < n.layers; ++k) {
    const auto& h = H[k];
    TORCH_CHECK(h.dim() == 3 && h.size(0) == C && h.size(2) == n.width[k] && h.size(1) <= kMaxWidth &&
                    h.dtype() == torch::kFloat32 && h.is_contiguous(),
                "factorized rate: matrix ", k, " must be a contiguous float32 [C, w_out, w_in] tensor (w <= 16)");
    n.width[k + 1] = static_cast<int>(h.size(1));
    TORCH_CHECK(b[k].numel() == C * n.width[k + 1] && b[k].is_contiguous() && b[k].dtype() == torch::kFloat32,
                "factorized rate: bias ", k, " must be contiguous float32 [C, w_out, 1]");
    n.H[k] = h.data_ptr<float>();
    n.b[k] = b[k].data_ptr<float>();
    n.hoff[k] = off;
    off += n.width[k + 1] * n.width[k];
    n.boff[k] = off;
    off += n.width[k + 1];
    if (k + 1 < n.layers) {
      TORCH_CHECK(a[k].numel() == C * n.width[k + 1] && a[k].is_contiguous() && a[k].dtype() == torch::kFloat32,
                  "factorized rate: factor ", k, " must be contiguous float32 [C, w_out, 1]");
      n.a[k] = a[k].data_ptr<float>();
      n.aoff[k] = off;
      off += n.width[k + 1];
    } else {
      n.a[k] = nullptr;
      n.aoff[k] = 0;
    }
  }
  TORCH_CHECK(n.width[n.layers] == 1, "factorized rate: the last matrix must have one output");
  n.nparams = off;
  return n;
}

void check_latents(const torch::Tensor& v) {
  TORCH_CHECK(v.dim() == 2 && v.dtype() == torch::kFloat32 && v.is_contiguous(),
              "factorized rate: latents must be a contiguous float32 [C, N] tensor");
}

}  // namespace

// Rate in bits of latents v [C, N] (noisy or rounded), as a float64 scalar tensor.
torch::Tensor factorized_rate_forward(torch::Tensor v, std::vector<torch::Tensor> H, std::vector<torch::Tensor> b,
                                      std::vector<torch::Tensor> a, double bound) {
  check_latents(v);
  const int64_t C = v.size(0), N = v.size(1);
  const Net net = make_net(H, b, a, C);
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(C * blocks), 0.0);
  const float* pv = v.data_ptr<float>();
  const Vec lb(static_cast<float>(bound)), half(0.5f), zero(0.0f), one(1.0f), minus_one(-1.0f);
  at::parallel_for(0, C * blocks, 1, [&](int64_t begin, int64_t end) {
    Acts s;
    for (int64_t cb = begin; cb < end; ++cb) {
      const int64_t c = cb / blocks, i0 = (cb % blocks) * kBlock, i1 = std::min(N, i0 + kBlock);
      double acc = 0.0;
      for (int64_t i = i0; i < i1; i += kLanes) {
        const int cnt = static_cast<int>(std::min<int64_t>(kLanes, i1 - i));
        const Vec y = Vec::loadu(pv + c * N + i, cnt);
        const Vec lo = logits_at(net, c, y - half, s);
        const Vec up = logits_at(net, c, y + half, s);
        const Vec sg = Vec::blendv(one, minus_one, (lo + up) > zero);
        const Vec lik = at::vec::maximum((sigmoid(sg * up) - sigmoid(sg * lo)).abs(), lb);
        alignas(64) float bits[kLanes];
        lik.log2().store(bits);
        for (int j = 0; j < cnt; ++j) acc -= static_cast<double>(bits[j]);
      }
      partial[cb] = acc;
    }
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return torch::tensor(total, torch::dtype(torch::kFloat64));
}

// Rate and the gradients of g * rate in one pass: (bits as a float64 scalar, d/dv [C, N], then per layer d/dH_k,
// d/db_k, and d/da_k for k < K, shaped as the inputs).
std::vector<torch::Tensor> factorized_rate_backward(torch::Tensor v, std::vector<torch::Tensor> H,
                                                    std::vector<torch::Tensor> b, std::vector<torch::Tensor> a,
                                                    double bound, double g) {
  check_latents(v);
  const int64_t C = v.size(0), N = v.size(1);
  const Net net = make_net(H, b, a, C);
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  const int P = net.nparams;
  std::vector<float> partial(static_cast<size_t>(C * blocks * P), 0.0f);
  std::vector<double> partial_bits(static_cast<size_t>(C * blocks), 0.0);
  auto gv = torch::empty_like(v);
  const float* pv = v.data_ptr<float>();
  float* pg = gv.data_ptr<float>();
  const Vec lb(static_cast<float>(bound)), half(0.5f), zero(0.0f), one(1.0f), minus_one(-1.0f);
  const Vec scale(static_cast<float>(-g * 1.4426950408889634));  // d(g * -log2 P)/dP = scale / P
  const bool negative_g = g < 0.0;
  at::parallel_for(0, C * blocks, 1, [&](int64_t begin, int64_t end) {
    Acts sl, su;
    std::vector<Vec> acc(static_cast<size_t>(P));
    for (int64_t cb = begin; cb < end; ++cb) {
      const int64_t c = cb / blocks, i0 = (cb % blocks) * kBlock, i1 = std::min(N, i0 + kBlock);
      for (int j = 0; j < P; ++j) acc[j] = zero;
      double bits_acc = 0.0;
      for (int64_t i = i0; i < i1; i += kLanes) {
        const int cnt = static_cast<int>(std::min<int64_t>(kLanes, i1 - i));
        const Vec y = Vec::loadu(pv + c * N + i, cnt);
        const Vec lo = logits_at(net, c, y - half, sl);
        const Vec up = logits_at(net, c, y + half, su);
        const Vec sg = Vec::blendv(one, minus_one, (lo + up) > zero);
        const Vec su_ = sigmoid(sg * up), sl_ = sigmoid(sg * lo);
        const Vec d = su_ - sl_;
        const Vec lik = d.abs();
        const Vec bounded = at::vec::maximum(lik, lb);
        alignas(64) float bits[kLanes];
        bounded.log2().store(bits);
        for (int j = 0; j < cnt; ++j) bits_acc -= static_cast<double>(bits[j]);
        Vec glik = scale / bounded;
        if (negative_g) glik = Vec::blendv(zero, glik, lik >= lb);  // lower bound: pass where it pushes P up
        if (cnt < kLanes) glik = glik * lane_mask(cnt);              // padded lanes contribute nothing
        const Vec sgn_d = Vec::blendv(Vec::blendv(zero, one, d > zero), minus_one, d < zero);
        const Vec gd = glik * sgn_d;
        const Vec gup = gd * sg * su_ * (one - su_);
        const Vec glo = (zero - gd) * sg * sl_ * (one - sl_);
        const Vec gy = backprop(net, c, y + half, su, gup, acc.data()) + backprop(net, c, y - half, sl, glo, acc.data());
        gy.store(pg + c * N + i, cnt);
      }
      float* out = partial.data() + cb * P;
      for (int j = 0; j < P; ++j) out[j] = lane_sum(acc[j]);
      partial_bits[cb] = bits_acc;
    }
  });
  std::vector<double> total(static_cast<size_t>(C * P), 0.0);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const float* p = partial.data() + (c * blocks + blk) * P;
      for (int j = 0; j < P; ++j) total[c * P + j] += p[j];
    }
  std::vector<torch::Tensor> gH, gb, ga;
  for (int k = 0; k < net.layers; ++k) {
    const int wi = net.width[k], wo = net.width[k + 1];
    auto th = torch::empty({C, wo, wi}, v.options());
    auto tb = torch::empty({C, wo, 1}, v.options());
    float* ph = th.data_ptr<float>();
    float* pb = tb.data_ptr<float>();
    for (int64_t c = 0; c < C; ++c) {
      for (int j = 0; j < wo * wi; ++j) ph[c * wo * wi + j] = static_cast<float>(total[c * P + net.hoff[k] + j]);
      for (int j = 0; j < wo; ++j) pb[c * wo + j] = static_cast<float>(total[c * P + net.boff[k] + j]);
    }
    gH.push_back(th);
    gb.push_back(tb);
    if (k + 1 < net.layers) {
      auto ta = torch::empty({C, wo, 1}, v.options());
      float* pa = ta.data_ptr<float>();
      for (int64_t c = 0; c < C; ++c)
        for (int j = 0; j < wo; ++j) pa[c * wo + j] = static_cast<float>(total[c * P + net.aoff[k] + j]);
      ga.push_back(ta);
    }
  }
  double total_bits = 0.0;
  for (double pb : partial_bits) total_bits += pb;
  std::vector<torch::Tensor> out{torch::tensor(total_bits, torch::dtype(torch::kFloat64)), gv};
  out.insert(out.end(), gH.begin(), gH.end());
  out.insert(out.end(), gb.begin(), gb.end());
  out.insert(out.end(), ga.begin(), ga.end());
  return out;
}

// Tabulated rate (FactorizedPrior.rate with knots): -log2 P and its derivative are known exactly at K evenly spaced
// knots per channel, f and df [C, K] at lo[c] + j / inv_h[c], and interpolated linearly in between. Returns (bits as a
// float64 scalar, and when want_grad: W [C, K] = the interpolation weight every knot received, summed over the
// latents — the gradient of the rate w.r.t. f — and d/dv [C, N], df interpolated). One pass over the latents; W is
// summed per fixed-size block, then the blocks in order, so it does not depend on the number of threads. A latent
// outside [lo, lo + (K - 1) / inv_h] is extrapolated from the end segment (the caller spans the latents' range).
std::vector<torch::Tensor> tabulated_rate(torch::Tensor v, torch::Tensor f, torch::Tensor df, torch::Tensor lo,
                                          torch::Tensor inv_h, bool want_grad) {
  // v may be strided (e.g. the channel-first view [C, N] of channel-last latents [N, C]); the gradient gets v's
  // strides, so it flows back to such latents without a transposing copy either way.
  TORCH_CHECK(v.dim() == 2 && v.dtype() == torch::kFloat32, "tabulated rate: latents must be a float32 [C, N] tensor");
  const int64_t C = v.size(0), N = v.size(1), sc = v.stride(0), sn = v.stride(1);
  TORCH_CHECK(f.dim() == 2 && f.size(0) == C && f.size(1) >= 2 && f.is_contiguous() && f.dtype() == torch::kFloat32,
              "tabulated rate: f must be a contiguous float32 [C, K >= 2] tensor");
  TORCH_CHECK(df.sizes() == f.sizes() && df.is_contiguous() && df.dtype() == torch::kFloat32,
              "tabulated rate: df must be a contiguous float32 tensor shaped like f");
  TORCH_CHECK(lo.numel() == C && inv_h.numel() == C && lo.is_contiguous() && inv_h.is_contiguous() &&
                  lo.dtype() == torch::kFloat32 && inv_h.dtype() == torch::kFloat32,
              "tabulated rate: lo and inv_h must be contiguous float32 [C] tensors");
  const int64_t K = f.size(1);
  constexpr int64_t kTabBlock = 1 << 15;
  const int64_t blocks = (N + kTabBlock - 1) / kTabBlock;
  std::vector<double> partial_bits(static_cast<size_t>(C * blocks), 0.0);
  std::vector<float> partial_w(want_grad ? static_cast<size_t>(C * blocks * K) : 0, 0.0f);
  auto gv = want_grad ? torch::empty_strided(v.sizes(), v.strides(), v.options()) : torch::empty({0}, v.options());
  const float* pv = v.data_ptr<float>();
  const float* pf = f.data_ptr<float>();
  const float* pdf = df.data_ptr<float>();
  const float* plo = lo.data_ptr<float>();
  const float* pih = inv_h.data_ptr<float>();
  float* pg = want_grad ? gv.data_ptr<float>() : nullptr;
  const float top = static_cast<float>(K - 2);
  at::parallel_for(0, C * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t cb = begin; cb < end; ++cb) {
      const int64_t c = cb / blocks, i0 = (cb % blocks) * kTabBlock, i1 = std::min(N, i0 + kTabBlock);
      const float* fc = pf + c * K;
      const float* dc = pdf + c * K;
      const float l = plo[c], ih = pih[c];
      float* w = want_grad ? partial_w.data() + cb * K : nullptr;
      double acc = 0.0;
      for (int64_t i = i0; i < i1; ++i) {
        const float t = (pv[c * sc + i * sn] - l) * ih;
        const float j = std::min(std::max(std::floor(t), 0.0f), top);
        const int64_t jj = static_cast<int64_t>(j);
        const float frac = t - j, f0 = fc[jj], f1 = fc[jj + 1];
        acc += static_cast<double>(f0 + frac * (f1 - f0));
        if (want_grad) {
          w[jj] += 1.0f - frac;
          w[jj + 1] += frac;
          pg[c * sc + i * sn] = dc[jj] + frac * (dc[jj + 1] - dc[jj]);
        }
      }
      partial_bits[cb] = acc;
    }
  });
  double total = 0.0;
  for (double b : partial_bits) total += b;
  std::vector<torch::Tensor> out{torch::tensor(total, torch::dtype(torch::kFloat64))};
  if (want_grad) {
    auto W = torch::zeros({C, K}, f.options());
    float* pw = W.data_ptr<float>();
    for (int64_t c = 0; c < C; ++c)
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const float* src = partial_w.data() + (c * blocks + blk) * K;
        for (int64_t j = 0; j < K; ++j) pw[c * K + j] += src[j];
      }
    out.push_back(W);
    out.push_back(gv);
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("tabulated_rate", &tabulated_rate, "rate in bits of latents, -log2 P interpolated between knots");
  m.def("factorized_rate_forward", &factorized_rate_forward, "rate in bits of latents under a factorized density");
  m.def("factorized_rate_backward", &factorized_rate_backward, "gradients of the factorized rate");
}
