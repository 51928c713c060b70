// One-pass float32 kernels for optbridge's torch-exact MindSpore optimizers (adapters/mindspore/optimizers.py),
// one per torch optimizer: SGD, Adam (and AdamW), RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam.
//
// MindSpore calls them through ops.Custom(func_type="aot") with its aot signature. Each kernel is one
// optimizer's composed-ops update of one parameter, in the same order, with the same roundings: its
// scalars (the step, bias corrections, step sizes, 1 - beta, the momentum branch) computed in float64
// from the group's hyperparameters (the last input) and rounded to float32 once, then the per-element
// float32 tensor work. The kernel writes the parameter and its states in place (the op is marked
// side_effect_mem, so MindSpore passes the Parameters' own memory and orders the op) and returns a
// 1-element float32 flag.
//
// Exact by construction, on every CPU: compiled with -ffp-contract=off (no fused multiply-add), no
// fast-math; + - * / and sqrt are IEEE-754 correctly rounded in every SIMD width, so vectorization and
// the split across threads do not change a bit; pow is the C library's, as in the graph and in torch. tests/test_mindspore_exact_optimizers.py checks the
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

// The Adam family's first lines (Adam, NAdam, RAdam): the parameter after decoupled weight decay, the gradient
// torch's update uses, exp_avg.lerp_(d, 1 - beta1) (m - w1 (m - d): the composed ops' two roundings) and
// exp_avg_sq * beta2 + ((1 - beta2) d) d.
struct Moments {
  float x, d, m, v;
};
template <bool kMax, int kWd>
inline Moments moments(float p, float g, float m, float v, float decay, float wd, float w1, float b2, float omb2) {
  const float x = kWd == 2 ? p * decay : p;
  const float d = direction<kMax, kWd>(g, x, wd);
  return {x, d, m - w1 * (m - d), v * b2 + (d * omb2) * d};
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
    const Moments s = moments<kMax, kWd>(p[i], g[i], m[i], v[i], decay, wd, w1, b2, omb2);
    m[i] = s.m;
    v[i] = s.v;
    float vv = s.v;
    if (kAms) {
      vv = maximum(vmax[i], s.v);
      vmax[i] = vv;
    }
    p[i] = s.x - ss * (s.m / (std::sqrt(vv) / bc2s + eps));
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
    const Moments s = moments<kMax, kWd>(p[i], g[i], m[i], v[i], decay, wd, w1, b2, omb2);
    m[i] = s.m;
    v[i] = s.v;
    const float denom = std::sqrt(s.v / bc2) + eps;
    const float y = s.x - c1 * (s.d / denom);
    p[i] = y - c2 * (s.m / denom);
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
    const Moments s = moments<kMax, kWd>(p[i], g[i], m[i], v[i], decay, wd, w1, b2, omb2);
    m[i] = s.m;
    v[i] = s.v;
    const float base = s.m / bc1 * lr;
    p[i] = s.x - (kRect ? base * (bc2s / (std::sqrt(s.v) + eps)) * rect : base);
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

// The scalars. Each kernel owns its optimizer's per-parameter float32 scalar states (torch's step, NAdam's
// mu_product, SGD's "has a momentum buffer" flag) and computes every coefficient from them and from `h`, the
// group's float64 values (its static flags, then its hyperparameters, as the graph holds them), exactly as
// optimizers.py's composed update does in the graph: float64, torch's expressions in torch's order, std::pow (the
// C library's pow, which MindSpore's float64 Pow and Python's ** call: the same bits, measured), rounded to float32
// once where torch's kernel takes a Python float. So a parameter's update is one graph op where the composed
// update's scalars take about twenty (each a launch, which dominates small tensors).
// A prelude reads the scalar states `s`, puts their new values in `next`, fills `c`, and returns which states to
// store after the loop (bit i: state i; a state SGD does not hold is a placeholder, the parameter itself).
using Prelude = int (*)(const float *s, float *next, const double *h, float *c);

// torch's float32 step tensor += 1, as a float64 Python number.
inline double tick(const float *s, float *next) {
  next[0] = s[0] + 1.0f;
  return next[0];
}

inline float f32(double x) { return static_cast<float>(x); }

// SGD. s = [has_momentum_buffer]; h = [maximize, L2, nesterov, dampening scale, momentum mode (0 off, 1 constant,
// 2 scheduled), weight_decay, lr, momentum, dampening]; c as sgd_loop's.
int sgd_prelude(const float *s, float *next, const double *h, float *c) {
  const double wd = h[5], lr = h[6], mom = h[7], damp = h[8];
  const int mode = static_cast<int>(h[4]);
  const bool first = s[0] <= 0.0f;  // no momentum_buffer yet: buf = grad (0 * momentum + grad)
  double on = 0.0, a = 0.0, g = 1.0;
  next[0] = s[0];
  if (mode != 0) {
    on = mode == 1 ? 1.0 : (mom != 0.0 ? 1.0 : 0.0);
    a = first ? 0.0 : mom;
    g = first ? 1.0 : 1.0 - damp;
    if (on != 0.0) next[0] = 1.0f;
  }
  const double v[] = {h[0], h[1], on, h[2], h[3], wd, lr, a, g, mom};
  for (int i = 0; i < 10; ++i) c[i] = f32(v[i]);
  return mode != 0 ? 1 : 0;
}

// Adam, AdamW. s = [step]; h = [maximize, amsgrad, weight decay mode, lr, beta1, beta2, eps, weight_decay].
int adam_prelude(const float *s, float *next, const double *h, float *c) {
  const double t = tick(s, next), lr = h[3], beta1 = h[4], beta2 = h[5], eps = h[6], wd = h[7];
  const double bias_correction1 = 1.0 - std::pow(beta1, t);
  const double bias_correction2 = 1.0 - std::pow(beta2, t);
  const double step_size = lr / bias_correction1;
  const double bias_correction2_sqrt = std::sqrt(bias_correction2);
  const double v[] = {h[0], h[1], h[2], h[2] == 2.0 ? 1.0 - lr * wd : 1.0, wd, 1.0 - beta1, beta2, 1.0 - beta2,
                      bias_correction2_sqrt, eps, step_size};
  for (int i = 0; i < 11; ++i) c[i] = f32(v[i]);
  return 1;
}

// RMSprop. s = [step]; h = [maximize, L2, centered, momentum mode, lr, alpha, eps, weight_decay, momentum].
int rmsprop_prelude(const float *s, float *next, const double *h, float *c) {
  tick(s, next);
  const double lr = h[4], alpha = h[5], eps = h[6], wd = h[7], mom = h[8];
  const double on = h[3] == 0.0 ? 0.0 : (h[3] == 1.0 ? 1.0 : (mom > 0.0 ? 1.0 : 0.0));
  const double v[] = {h[0], h[1], h[2], on, wd, alpha, 1.0 - alpha, eps, lr, mom};
  for (int i = 0; i < 10; ++i) c[i] = f32(v[i]);
  return 1;
}

// Adagrad. s = [step]; h = [maximize, L2, lr, lr_decay, weight_decay, eps].
int adagrad_prelude(const float *s, float *next, const double *h, float *c) {
  const double t = tick(s, next), lr = h[2], lr_decay = h[3], wd = h[4], eps = h[5];
  const double clr = lr / (1.0 + (t - 1.0) * lr_decay);
  const double v[] = {h[0], h[1], wd, clr, eps};
  for (int i = 0; i < 5; ++i) c[i] = f32(v[i]);
  return 1;
}

// Adadelta. s = [step]; h = [maximize, L2, lr, rho, eps, weight_decay].
int adadelta_prelude(const float *s, float *next, const double *h, float *c) {
  tick(s, next);
  const double lr = h[2], rho = h[3], eps = h[4], wd = h[5];
  const double v[] = {h[0], h[1], wd, rho, 1.0 - rho, eps, lr};
  for (int i = 0; i < 7; ++i) c[i] = f32(v[i]);
  return 1;
}

// Adamax. s = [step]; h = [maximize, L2, lr, beta1, beta2, eps, weight_decay].
int adamax_prelude(const float *s, float *next, const double *h, float *c) {
  const double t = tick(s, next), lr = h[2], beta1 = h[3], beta2 = h[4], eps = h[5], wd = h[6];
  const double clr = lr / (1.0 - std::pow(beta1, t));
  const double v[] = {h[0], h[1], wd, 1.0 - beta1, beta2, eps, clr};
  for (int i = 0; i < 7; ++i) c[i] = f32(v[i]);
  return 1;
}

// NAdam. s = [step, mu_product]; h = [maximize, weight decay mode, lr, beta1, beta2, eps, weight_decay,
// momentum_decay].
int nadam_prelude(const float *s, float *next, const double *h, float *c) {
  const double t = tick(s, next), lr = h[2], beta1 = h[3], beta2 = h[4], eps = h[5], wd = h[6], psi = h[7];
  const double bias_correction2 = 1.0 - std::pow(beta2, t);
  const double mu = beta1 * (1.0 - 0.5 * std::pow(0.96, t * psi));
  const double mu_next = beta1 * (1.0 - 0.5 * std::pow(0.96, (t + 1.0) * psi));
  next[1] = s[1] * f32(mu);  // mu_product *= mu (a float32 tensor)
  const double mp = next[1];
  const double mu_product_next = mp * mu_next;
  const double grad_step = -(-lr * (1.0 - mu) / (1.0 - mp));
  const double momentum_step = -((-lr * mu_next) / (1.0 - mu_product_next));
  const double v[] = {h[0], h[1], h[1] == 2.0 ? 1.0 - lr * wd : 1.0, wd, 1.0 - beta1, beta2, 1.0 - beta2,
                      bias_correction2, eps, grad_step, momentum_step};
  for (int i = 0; i < 11; ++i) c[i] = f32(v[i]);
  return 3;
}

// RAdam. s = [step]; h = [maximize, weight decay mode, lr, beta1, beta2, eps, weight_decay].
int radam_prelude(const float *s, float *next, const double *h, float *c) {
  const double t = tick(s, next), lr = h[2], beta1 = h[3], beta2 = h[4], eps = h[5], wd = h[6];
  const double bias_correction1 = 1.0 - std::pow(beta1, t);
  const double bias_correction2 = 1.0 - std::pow(beta2, t);
  const double rho_inf = 2.0 / (1.0 - beta2) - 1.0;
  const double rho_t = rho_inf - 2.0 * t * std::pow(beta2, t) / bias_correction2;
  const bool rectified = rho_t > 5.0;
  const double rect = rectified ? std::sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf /
                                            ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                                : 1.0;
  const double v[] = {h[0], rectified ? 1.0 : 0.0, h[1], h[1] == 2.0 ? 1.0 - lr * wd : 1.0, wd, 1.0 - beta1, beta2,
                      1.0 - beta2, bias_correction1, lr, std::sqrt(bias_correction2), eps, rect};
  for (int i = 0; i < 13; ++i) c[i] = f32(v[i]);
  return 1;
}

// One update of one parameter. Inputs: `tensors` (param, grad, tensor states), `scalars` float32 0-d states, the
// float64 `h`; the output flag last. The scalar states are written after the tensors (a failure writes nothing).
template <std::size_t N>
int launch(const std::array<Loop, N> &table, Prelude prelude, int flags, bool mode, int tensors, int scalars,
           int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != tensors + scalars + 2) return 1;
  float s[2], next[2], c[16];
  for (int i = 0; i < scalars; ++i) {  // a placeholder (SGD without momentum: the parameter) may be empty
    const bool held = numel(ndims[tensors + i], shapes[tensors + i]) > 0;
    s[i] = held ? static_cast<const float *>(params[tensors + i])[0] : 0.0f;
  }
  const int store = prelude(s, next, static_cast<const double *>(params[tensors + scalars]), c);
  const int k = index(c, flags, mode);
  if (k < 0 || static_cast<std::size_t>(k) >= N) return 1;
  const Loop loop = table[k];
  float *t[8];
  for (int i = 0; i < tensors; ++i) t[i] = static_cast<float *>(params[i]);
  parallel_for(numel(ndims[0], shapes[0]), [&](int64_t b, int64_t e) { loop(b, e, t, c); });
  for (int i = 0; i < scalars; ++i) {
    if ((store & (1 << i)) && numel(ndims[tensors + i], shapes[tensors + i]) > 0)
      static_cast<float *>(params[tensors + i])[0] = next[i];
  }
  static_cast<float *>(params[nparam - 1])[0] = 1.0f;
  return 0;
}

}  // namespace

#define OPTBRIDGE_KERNEL(name, table, flags, mode, tensors, scalars)                                            \
  extern "C" int optbridge_##name(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, \
                                  void *) {                                                                     \
    static constexpr auto kTable = table;                                                                       \
    return launch(kTable, name##_prelude, flags, mode, tensors, scalars, nparam, params, ndims, shapes);        \
  }

OPTBRIDGE_KERNEL(sgd, sgd_table(std::make_index_sequence<32>()), 5, false, 3, 1)
OPTBRIDGE_KERNEL(adam, adam_table(std::make_index_sequence<12>()), 2, true, 5, 1)
OPTBRIDGE_KERNEL(rmsprop, rmsprop_table(std::make_index_sequence<16>()), 4, false, 5, 1)
OPTBRIDGE_KERNEL(adagrad, table2<Adagrad>(std::make_index_sequence<4>()), 2, false, 3, 1)
OPTBRIDGE_KERNEL(adadelta, table2<Adadelta>(std::make_index_sequence<4>()), 2, false, 4, 1)
OPTBRIDGE_KERNEL(adamax, table2<Adamax>(std::make_index_sequence<4>()), 2, false, 4, 1)
OPTBRIDGE_KERNEL(nadam, nadam_table(std::make_index_sequence<6>()), 1, true, 4, 2)
OPTBRIDGE_KERNEL(radam, radam_table(std::make_index_sequence<12>()), 2, true, 4, 1)
