// One-pass float32 kernels for optbridge's torch-exact MindSpore optimizers (adapters/mindspore/optimizers.py),
// one per torch optimizer: SGD, Adam (and AdamW), RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam.
//
// MindSpore calls them through ops.Custom(func_type="aot") with its aot signature. Each kernel is the
// per-element float32 tensor work of one optimizer's composed-ops update, in the same order, with the
// same roundings: every scalar (bias corrections, step sizes, 1 - beta, the momentum branch) is
// computed in the graph in float64 and arrives here rounded to float32, in `c` (the last input). The
// kernel writes the parameter and its state in place (the op is marked side_effect_mem, so MindSpore
// passes the Parameters' own memory and orders the op) and returns a 1-element float32 flag.
//
// Exact by construction, on every CPU: compiled with -ffp-contract=off (no fused multiply-add), no
// fast-math; + - * / and sqrt are IEEE-754 correctly rounded in every SIMD width, so vectorization and
// the split across threads do not change a bit. tests/test_mindspore_exact_optimizers.py checks the
// kernels against the composed ops bit for bit.
#include <sched.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <thread>
#include <utility>
#include <vector>

namespace {

int64_t numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

// Elements per thread below which one thread does the whole tensor (a thread costs ~20 us).
constexpr int64_t kGrain = 1 << 18;

int usable_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// fn(begin, end) over [0, n), split into contiguous ranges (element results do not depend on the split).
template <typename Fn>
void parallel_for(int64_t n, Fn fn) {
  int64_t threads = std::min<int64_t>(usable_cpus(), n / kGrain);
  if (threads <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  int64_t chunk = (n + threads - 1) / threads;
  chunk = (chunk + 15) / 16 * 16;
  std::vector<std::thread> pool;
  for (int64_t b = chunk; b < n; b += chunk) pool.emplace_back(fn, b, std::min(n, b + chunk));
  fn(int64_t{0}, std::min(n, chunk));
  for (auto &t : pool) t.join();
}

// torch.maximum / ops.maximum: NaN if either is NaN (a select, so the loop vectorizes).
inline float maximum(float a, float b) { return (a > b || a != a) ? a : b; }

// The loops: one instantiation per set of static options (the template flags), branch-free inside so that each
// vectorizes, and cloned for AVX-512, AVX2 and the baseline (the same IEEE operations at every width: the same
// bits). t: the tensors (param, grad, then the optimizer's states in the op's input order); c: the coefficients.
// Weight decay modes: 0 off, 1 L2 (grad + param * weight_decay), 2 decoupled (param * (1 - lr * weight_decay)).
#define OPTBRIDGE_LOOP __attribute__((target_clones("avx512f", "avx2", "default"))) void
using Loop = void (*)(int64_t, int64_t, float *const *, const float *);

// The gradient torch's update uses: -grad if maximize, plus param * weight_decay (L2).
template <bool kMax, int kWd>
inline float direction(float g, float p, float wd) {
  float d = kMax ? -g : g;
  if (kWd == 1) d = d + p * wd;
  return d;
}

// SGD. t = [param, grad, momentum_buffer]. Flags: maximize, L2, momentum on (this step), nesterov, dampening.
// c = [flags..., weight_decay, lr, buffer factor (0 on the first step), grad factor (1 - dampening; 1 first),
//      momentum]
template <bool kMax, bool kL2, bool kOn, bool kNesterov, bool kScale>
OPTBRIDGE_LOOP sgd_loop(int64_t b, int64_t e, float *const *t, const float *c) {
  float *p = t[0], *g = t[1], *buf = t[2];
  const float wd = c[5], lr = c[6], a = c[7], damp = c[8], mom = c[9];
  for (int64_t i = b; i < e; ++i) {
    const float d = direction<kMax, kL2>(g[i], p[i], wd);
    if (!kOn) {
      p[i] = p[i] - lr * d;
    } else {
      const float m = buf[i] * a + (kScale ? d * damp : d);
      buf[i] = m;
      p[i] = p[i] - lr * (kNesterov ? d + m * mom : m);
    }
  }
}

// Adam, AdamW. t = [param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq]. Flags: maximize, amsgrad; weight decay mode.
// c = [flags..., mode, 1 - lr * weight_decay, weight_decay, 1 - beta1, beta2, 1 - beta2, sqrt(bias_correction2),
//      eps, lr / bias_correction1]
template <bool kMax, bool kAms, int kWd>
OPTBRIDGE_LOOP adam_loop(int64_t b, int64_t e, float *const *t, const float *c) {
  float *p = t[0], *g = t[1], *m = t[2], *v = t[3], *vmax = t[4];
  const float decay = c[3], wd = c[4], w1 = c[5], b2 = c[6], omb2 = c[7], bc2s = c[8], eps = c[9], ss = c[10];
  for (int64_t i = b; i < e; ++i) {
    const float x = kWd == 2 ? p[i] * decay : p[i];
    const float d = direction<kMax, kWd>(g[i], x, wd);
    const float mi = m[i] - w1 * (m[i] - d);
    const float vi = v[i] * b2 + (d * omb2) * d;
    m[i] = mi;
    v[i] = vi;
    float vv = vi;
    if (kAms) {
      vv = maximum(vmax[i], vi);
      vmax[i] = vv;
    }
    p[i] = x - ss * (mi / (std::sqrt(vv) / bc2s + eps));
  }
}

// RMSprop. t = [param, grad, square_avg, grad_avg, momentum_buffer]. Flags: maximize, L2, centered, momentum on.
// c = [flags..., weight_decay, alpha, 1 - alpha, eps, lr, momentum]
template <bool kMax, bool kL2, bool kCentered, bool kOn>
OPTBRIDGE_LOOP rmsprop_loop(int64_t b, int64_t e, float *const *t, const float *c) {
  float *p = t[0], *g = t[1], *sq = t[2], *ga = t[3], *buf = t[4];
  const float wd = c[4], alpha = c[5], oma = c[6], eps = c[7], lr = c[8], mom = c[9];
  for (int64_t i = b; i < e; ++i) {
    const float d = direction<kMax, kL2>(g[i], p[i], wd);
    const float s = sq[i] * alpha + (d * oma) * d;
    sq[i] = s;
    float avg;
    if (kCentered) {
      const float a = ga[i] - oma * (ga[i] - d);
      ga[i] = a;
      // torch's addcmul(grad_avg, grad_avg, value=-1) is one fused multiply-add: the exact product, one rounding
      avg = std::sqrt(static_cast<float>(static_cast<double>(s) - static_cast<double>(a) * static_cast<double>(a)));
    } else {
      avg = std::sqrt(s);
    }
    const float q = d / (avg + eps);
    if (kOn) {
      const float bi = buf[i] * mom + q;
      buf[i] = bi;
      p[i] = p[i] - lr * bi;
    } else {
      p[i] = p[i] - lr * q;
    }
  }
}

// Adagrad. t = [param, grad, sum]. Flags: maximize, L2. c = [flags..., weight_decay, clr, eps]
template <bool kMax, bool kL2>
OPTBRIDGE_LOOP adagrad_loop(int64_t b, int64_t e, float *const *t, const float *c) {
  float *p = t[0], *g = t[1], *sum = t[2];
  const float wd = c[2], clr = c[3], eps = c[4];
  for (int64_t i = b; i < e; ++i) {
    const float d = direction<kMax, kL2>(g[i], p[i], wd);
    const float s = sum[i] + d * d;
    sum[i] = s;
    p[i] = p[i] - clr * (d / (std::sqrt(s) + eps));
  }
}

// Adadelta. t = [param, grad, square_avg, acc_delta]. Flags: maximize, L2.
// c = [flags..., weight_decay, rho, 1 - rho, eps, lr]
template <bool kMax, bool kL2>
OPTBRIDGE_LOOP adadelta_loop(int64_t b, int64_t e, float *const *t, const float *c) {
  float *p = t[0], *g = t[1], *sq = t[2], *acc = t[3];
  const float wd = c[2], rho = c[3], omr = c[4], eps = c[5], lr = c[6];
  for (int64_t i = b; i < e; ++i) {
    const float d = direction<kMax, kL2>(g[i], p[i], wd);
    const float s = sq[i] * rho + (d * omr) * d;
    sq[i] = s;
    const float delta = std::sqrt(acc[i] + eps) / std::sqrt(s + eps) * d;
    acc[i] = acc[i] * rho + (delta * omr) * delta;
    p[i] = p[i] - lr * delta;
  }
}

// Adamax. t = [param, grad, exp_avg, exp_inf]. Flags: maximize, L2.
// c = [flags..., weight_decay, 1 - beta1, beta2, eps, lr / bias_correction1]
template <bool kMax, bool kL2>
OPTBRIDGE_LOOP adamax_loop(int64_t b, int64_t e, float *const *t, const float *c) {
  float *p = t[0], *g = t[1], *m = t[2], *u = t[3];
  const float wd = c[2], w1 = c[3], b2 = c[4], eps = c[5], clr = c[6];
  for (int64_t i = b; i < e; ++i) {
    const float d = direction<kMax, kL2>(g[i], p[i], wd);
    const float mi = m[i] - w1 * (m[i] - d);
    const float ui = maximum(u[i] * b2, std::fabs(d) + eps);
    m[i] = mi;
    u[i] = ui;
    p[i] = p[i] - clr * (mi / ui);
  }
}

// NAdam. t = [param, grad, exp_avg, exp_avg_sq]. Flag: maximize; weight decay mode.
// c = [flag, mode, 1 - lr * weight_decay, weight_decay, 1 - beta1, beta2, 1 - beta2, bias_correction2, eps,
//      grad step (lr (1 - mu) / (1 - mu_product)), momentum step (lr mu_next / (1 - mu_product mu_next))]
template <bool kMax, int kWd>
OPTBRIDGE_LOOP nadam_loop(int64_t b, int64_t e, float *const *t, const float *c) {
  float *p = t[0], *g = t[1], *m = t[2], *v = t[3];
  const float decay = c[2], wd = c[3], w1 = c[4], b2 = c[5], omb2 = c[6], bc2 = c[7], eps = c[8], c1 = c[9],
              c2 = c[10];
  for (int64_t i = b; i < e; ++i) {
    const float x = kWd == 2 ? p[i] * decay : p[i];
    const float d = direction<kMax, kWd>(g[i], x, wd);
    const float mi = m[i] - w1 * (m[i] - d);
    const float vi = v[i] * b2 + (d * omb2) * d;
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi / bc2) + eps;
    const float y = x - c1 * (d / denom);
    p[i] = y - c2 * (mi / denom);
  }
}

// RAdam. t = [param, grad, exp_avg, exp_avg_sq]. Flags: maximize, rectified (rho_t > 5); weight decay mode.
// c = [flags..., mode, 1 - lr * weight_decay, weight_decay, 1 - beta1, beta2, 1 - beta2, bias_correction1, lr,
//      sqrt(bias_correction2), eps, rect]
template <bool kMax, bool kRect, int kWd>
OPTBRIDGE_LOOP radam_loop(int64_t b, int64_t e, float *const *t, const float *c) {
  float *p = t[0], *g = t[1], *m = t[2], *v = t[3];
  const float decay = c[3], wd = c[4], w1 = c[5], b2 = c[6], omb2 = c[7], bc1 = c[8], lr = c[9], bc2s = c[10],
              eps = c[11], rect = c[12];
  for (int64_t i = b; i < e; ++i) {
    const float x = kWd == 2 ? p[i] * decay : p[i];
    const float d = direction<kMax, kWd>(g[i], x, wd);
    const float mi = m[i] - w1 * (m[i] - d);
    const float vi = v[i] * b2 + (d * omb2) * d;
    m[i] = mi;
    v[i] = vi;
    const float base = mi / bc1 * lr;
    p[i] = x - (kRect ? base * (bc2s / (std::sqrt(vi) + eps)) * rect : base);
  }
}

// Tables of instantiations, indexed by the flags as bits (bit k: the k-th boolean flag) and, for the kinds with
// a weight decay mode, the mode in the bits above them.
template <std::size_t... kI>
constexpr std::array<Loop, sizeof...(kI)> sgd_table(std::index_sequence<kI...>) {
  return {&sgd_loop<(kI & 1) != 0, (kI & 2) != 0, (kI & 4) != 0, (kI & 8) != 0, (kI & 16) != 0>...};
}
template <std::size_t... kI>
constexpr std::array<Loop, sizeof...(kI)> adam_table(std::index_sequence<kI...>) {
  return {&adam_loop<(kI & 1) != 0, (kI & 2) != 0, static_cast<int>(kI >> 2) % 3>...};
}
template <std::size_t... kI>
constexpr std::array<Loop, sizeof...(kI)> rmsprop_table(std::index_sequence<kI...>) {
  return {&rmsprop_loop<(kI & 1) != 0, (kI & 2) != 0, (kI & 4) != 0, (kI & 8) != 0>...};
}
template <template <bool, bool> class L, std::size_t... kI>
constexpr std::array<Loop, sizeof...(kI)> table2(std::index_sequence<kI...>) {
  return {L<(kI & 1) != 0, (kI & 2) != 0>::run...};
}
template <std::size_t... kI>
constexpr std::array<Loop, sizeof...(kI)> nadam_table(std::index_sequence<kI...>) {
  return {&nadam_loop<(kI & 1) != 0, static_cast<int>(kI >> 1) % 3>...};
}
template <std::size_t... kI>
constexpr std::array<Loop, sizeof...(kI)> radam_table(std::index_sequence<kI...>) {
  return {&radam_loop<(kI & 1) != 0, (kI & 2) != 0, static_cast<int>(kI >> 2) % 3>...};
}
template <bool kMax, bool kL2>
struct Adagrad { static constexpr Loop run = &adagrad_loop<kMax, kL2>; };
template <bool kMax, bool kL2>
struct Adadelta { static constexpr Loop run = &adadelta_loop<kMax, kL2>; };
template <bool kMax, bool kL2>
struct Adamax { static constexpr Loop run = &adamax_loop<kMax, kL2>; };

// The table index from the first `flags` coefficients (0 or 1) and, if `mode`, the weight decay mode after them.
int index(const float *c, int flags, bool mode) {
  int k = 0;
  for (int i = 0; i < flags; ++i) k |= (c[i] != 0.0f ? 1 : 0) << i;
  if (mode) {
    const float wd = c[flags];
    if (!(wd == 0.0f || wd == 1.0f || wd == 2.0f)) return -1;
    k |= static_cast<int>(wd) << flags;
  }
  return k;
}

// One update of one parameter: `tensors` inputs (param, grad, states), then the coefficients; the output flag last.
template <std::size_t N>
int launch(const std::array<Loop, N> &table, int flags, bool mode, int tensors, int nparam, void **params,
           int *ndims, int64_t **shapes) {
  if (nparam != tensors + 2) return 1;
  const float *c = static_cast<const float *>(params[tensors]);
  const int k = index(c, flags, mode);
  if (k < 0 || static_cast<std::size_t>(k) >= N) return 1;
  const Loop loop = table[k];
  float *t[8];
  for (int i = 0; i < tensors; ++i) t[i] = static_cast<float *>(params[i]);
  parallel_for(numel(ndims[0], shapes[0]), [&](int64_t b, int64_t e) { loop(b, e, t, c); });
  static_cast<float *>(params[tensors + 1])[0] = 1.0f;
  return 0;
}

}  // namespace

#define OPTBRIDGE_KERNEL(name, table, flags, mode, tensors)                                                     \
  extern "C" int optbridge_##name(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, \
                                  void *) {                                                                     \
    static constexpr auto kTable = table;                                                                       \
    return launch(kTable, flags, mode, tensors, nparam, params, ndims, shapes);                                 \
  }

OPTBRIDGE_KERNEL(sgd, sgd_table(std::make_index_sequence<32>()), 5, false, 3)
OPTBRIDGE_KERNEL(adam, adam_table(std::make_index_sequence<12>()), 2, true, 5)
OPTBRIDGE_KERNEL(rmsprop, rmsprop_table(std::make_index_sequence<16>()), 4, false, 5)
OPTBRIDGE_KERNEL(adagrad, table2<Adagrad>(std::make_index_sequence<4>()), 2, false, 3)
OPTBRIDGE_KERNEL(adadelta, table2<Adadelta>(std::make_index_sequence<4>()), 2, false, 4)
OPTBRIDGE_KERNEL(adamax, table2<Adamax>(std::make_index_sequence<4>()), 2, false, 4)
OPTBRIDGE_KERNEL(nadam, nadam_table(std::make_index_sequence<6>()), 1, true, 4)
OPTBRIDGE_KERNEL(radam, radam_table(std::make_index_sequence<12>()), 2, true, 4)
