// Lazy ("sparse") Adam step on the rows a sparse gradient touches (Kingma & Ba 2015, Alg. 1, applied row-wise as
// torch.optim.SparseAdam does): for each touched row r and column j
//   m <- m + (g - m)(1 - b1),  v <- v + (g^2 - v)(1 - b2),  p <- p - step_size * m / (sqrt(v) + eps),
// step_size = lr * sqrt(1 - b2^t) / (1 - b1^t). The twin is torch.optim.SparseAdam (tests/test_kernel_twins.py).
// Rows must be unique (a coalesced gradient); they are updated in parallel, each by one thread.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cmath>

void sparse_adam_step_(torch::Tensor param, torch::Tensor exp_avg, torch::Tensor exp_avg_sq, torch::Tensor rows,
                       torch::Tensor values, double beta1, double beta2, double eps, double step_size) {
  TORCH_CHECK(param.dim() == 2 && param.dtype() == torch::kFloat32 && param.is_contiguous(),
              "sparse adam: param must be a contiguous float32 [m, k] tensor");
  TORCH_CHECK(exp_avg.sizes() == param.sizes() && exp_avg_sq.sizes() == param.sizes() && exp_avg.is_contiguous() &&
                  exp_avg_sq.is_contiguous() && exp_avg.dtype() == torch::kFloat32 &&
                  exp_avg_sq.dtype() == torch::kFloat32,
              "sparse adam: moments must be contiguous float32 tensors shaped like the param");
  TORCH_CHECK(rows.dim() == 1 && rows.dtype() == torch::kInt64 && rows.is_contiguous(),
              "sparse adam: rows must be a contiguous int64 [U] tensor");
  TORCH_CHECK(values.dim() == 2 && values.size(0) == rows.size(0) && values.size(1) == param.size(1) &&
                  values.dtype() == torch::kFloat32 && values.is_contiguous(),
              "sparse adam: values must be a contiguous float32 [U, k] tensor");
  const int64_t U = rows.size(0), K = param.size(1), M = param.size(0);
  const int64_t* pr = rows.data_ptr<int64_t>();
  for (int64_t i = 0; i < U; ++i) TORCH_CHECK(pr[i] >= 0 && pr[i] < M, "sparse adam: row index out of range");
  float* p = param.data_ptr<float>();
  float* m = exp_avg.data_ptr<float>();
  float* v = exp_avg_sq.data_ptr<float>();
  const float* g = values.data_ptr<float>();
  const float c1 = static_cast<float>(1.0 - beta1), c2 = static_cast<float>(1.0 - beta2);
  const float e = static_cast<float>(eps), s = static_cast<float>(step_size);
  at::parallel_for(0, U, 512, [&](int64_t b, int64_t end) {
    for (int64_t i = b; i < end; ++i) {
      const int64_t r = pr[i] * K;
      const float* gi = g + i * K;
      for (int64_t j = 0; j < K; ++j) {
        const float gj = gi[j];
        const float mj = m[r + j] + (gj - m[r + j]) * c1;
        const float vj = v[r + j] + (gj * gj - v[r + j]) * c2;
        m[r + j] = mj;
        v[r + j] = vj;
        p[r + j] -= s * (mj / (std::sqrt(vj) + e));
      }
    }
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("sparse_adam_step_", &sparse_adam_step_, "lazy Adam step on the rows of a coalesced sparse gradient");
}
