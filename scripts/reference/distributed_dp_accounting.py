#!/usr/bin/env python3
"""Independent reference for the accounting of distributed DP (issue 15).

Computes (epsilon, delta) for the two distributed mechanisms of dptrain's secure aggregation
path, from the published formulas, in multi-precision arithmetic (mpmath, 60 digits):

  * distributed Skellam: Agarwal, Kairouz & Liu 2021 (NeurIPS; arXiv 2110.04995), the RDP bound
    of the multi-dimensional Skellam mechanism with both the L2 and the L1 sensitivity terms;
  * distributed discrete Gaussian (DDG): Kairouz, Liu & Steinke 2021 (ICML; arXiv 2102.06387),
    the RDP bound of a sum of n discrete Gaussians with the tau slack (Theorem 1, Prop. 14);

both after quantisation (randomised rotation, scaling by s = 1/gamma, conditional stochastic
rounding with bias beta: inflated L2/L1 sensitivities, Theorem 1 / Prop. 22 of 2102.06387),
Poisson-subsampled at rate q with Zhu & Wang 2019's general upper bound on integer orders,
composed over T rounds, and converted to (epsilon, delta) with the conversion of Balle et al.
2020 (Thm 21) / Canonne, Kamath & Steinke 2020 (Prop. 12), which is the one google-research's
code gets from tensorflow_privacy 0.8.0 (`get_privacy_spent`).

docs/distributed-dp-accounting.md states every formula with its source. The code here was
written from those formulas; google-research/federated's `distributed_dp/accounting_utils.py`
was read, not copied. Optionally (--google) this script loads that file from a path outside
the repository and reports the largest relative difference against it.

Usage (the venv and the two google/tensorflow files live outside the repository):
  python3 -m venv ~/venv-ref && ~/venv-ref/bin/pip install mpmath numpy scipy dp-accounting==0.6.0
  ~/venv-ref/bin/python scripts/reference/distributed_dp_accounting.py           # writes the CSV
  ~/venv-ref/bin/python scripts/reference/distributed_dp_accounting.py --check   # compare only
  # cross-check: accounting_utils.py from a google-research/federated checkout (e.g. `git show
  # HEAD:distributed_dp/accounting_utils.py > /tmp/x/accounting_utils.py`), and the pure-Python
  # wheel `pip download --no-deps tensorflow-privacy==0.8.0` unzipped into /tmp/tfp080:
  ~/venv-ref/bin/python scripts/reference/distributed_dp_accounting.py --self-test \
      --google /tmp/x/accounting_utils.py --tfp /tmp/tfp080

Needs Python 3.11 and mpmath; numpy/scipy/dp-accounting only for the optional checks.
Exit status 1 when a check exceeds --tolerance (1e-9).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from dataclasses import dataclass, field

import mpmath

PREC_DIGITS = 60
RDP_ORDERS = tuple(range(2, 129)) + (256,)
ORDERS_LABEL = "2..128;256"
DEFAULT_MODCLIP_PROB = 1e-4
REPO_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CSV_PATH = os.path.join(REPO_ROOT, "tests", "data", "distributed_dp_vectors.csv")

# ---------------------------------------------------------------------------------------------
# Formulas. Every function takes a mpmath context `m` (mpmath.mp for the reference values,
# mpmath.fp to see what plain float64 evaluation of the same formulas gives).
# ---------------------------------------------------------------------------------------------


def k_stddevs_for(m, modclip_prob):
    """k such that P(|Z| > k) = modclip_prob for Z ~ N(0, 1): k = sqrt(2) * erfc^-1(p)."""
    return m.sqrt(2) * m.erfinv(1 - m.mpf(modclip_prob))


def heuristic_scale(m, local_stddev, clip, bits, n, dim, k, rho=1):
    """Scale s = 1/gamma such that k standard deviations of one coordinate of the aggregate fit
    in [-2^(b-1), 2^(b-1)) (Kairouz et al. 2021 Sec. 4.2/4.4; solved for gamma from
        2^b = 2k * sqrt(rho/d * (c n)^2 + (gamma^2/4 + sigma^2) n) / gamma ).
    sigma is the per-client noise stddev in the unscaled domain, gamma^2/4 the variance bound of
    one client's stochastic-rounding error per coordinate, rho the rotation's flatness."""
    two_2b = m.mpf(2) ** (2 * bits)
    slack = two_2b - n * k * k
    if slack <= 0:
        raise ValueError(f"bits={bits} too small for n={n}, k={k}: need 4^b > n k^2")
    signal_and_noise = m.mpf(rho) / dim * (clip * n) ** 2 + n * local_stddev**2
    return m.sqrt(slack) / (2 * k * m.sqrt(signal_and_noise))


def bits_needed(m, scale, local_stddev, clip, n, dim, k, rho=1):
    """The same relation solved for b: the least integer b with
        2^b >= 2k * sqrt(rho/d * (c n)^2 + (gamma^2/4 + sigma^2) n) / gamma,  gamma = 1/scale."""
    gamma = 1 / m.mpf(scale)
    width = 2 * k * m.sqrt(m.mpf(rho) / dim * (clip * n) ** 2
                           + (gamma**2 / 4 + local_stddev**2) * n) / gamma
    return int(m.ceil(m.log(width) / m.log(2)))


def inflated_l2_scaled(m, clip_scaled, beta, dim):
    """L2 norm bound after (conditional) stochastic rounding of a vector of L2 norm <= x = c*s
    to Z^d (2102.06387 Thm 1 / Prop. 22):
        min( x + sqrt(d),  sqrt(x^2 + d/4 + sqrt(2 ln(1/beta)) (x + sqrt(d)/2)) ),
    the second term only when beta > 0 (beta = 0: unconditional rounding)."""
    x = m.mpf(clip_scaled)
    bound_1 = x + m.sqrt(dim)
    if beta == 0:
        return bound_1
    bound_2 = m.sqrt(x * x + m.mpf(dim) / 4
                     + m.sqrt(2 * m.log(1 / m.mpf(beta))) * (x + m.sqrt(dim) / 2))
    return min(bound_1, bound_2)


def inflated_l1_scaled(m, l2_scaled, dim):
    """L1 bound of an integer vector with L2 norm <= D2: D1 <= D2 * min(sqrt(d), D2)
    (Cauchy-Schwarz, and |v_i| <= v_i^2 for integers)."""
    return l2_scaled * min(m.sqrt(dim), l2_scaled)


def ddg_tau(m, local_stddev_scaled, n):
    """tau = 10 * sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k/(k+1)), sigma the per-client
    discrete-Gaussian stddev in integer units (2102.06387 Theorem 1)."""
    s2 = m.mpf(local_stddev_scaled) ** 2
    return 10 * m.fsum(m.exp(-2 * m.pi**2 * s2 * k / (k + 1)) for k in range(1, n))


def ddg_rdp(m, alpha, l2_scaled, l1_scaled, local_stddev_scaled, n, tau, dim):
    """RDP of the sum of n discrete Gaussians N_Z(0, sigma^2) with sensitivities D2, D1
    (2102.06387 Prop. 14 / Eq. 17), with l2 = D2/(sqrt(n) sigma), l1 = D1/(sqrt(n) sigma):
        min( a/2 l2^2 + tau d,  a/2 (l2^2 + 2 l1 tau + tau^2 d),  a/2 (l2 + tau sqrt(d))^2 )."""
    a = m.mpf(alpha)
    root_var = m.sqrt(n) * local_stddev_scaled
    l2 = l2_scaled / root_var
    l1 = l1_scaled / root_var
    term_1 = a / 2 * l2**2 + tau * dim
    term_2 = a / 2 * (l2**2 + 2 * l1 * tau + tau**2 * dim)
    term_3 = a / 2 * (l2 + tau * m.sqrt(dim)) ** 2
    return min(term_1, term_2, term_3)


def skellam_rdp(m, alpha, l2_scaled, l1_scaled, mu):
    """RDP of the multi-dimensional Skellam mechanism (2110.04995): noise with per-coordinate
    variance mu (Sk(mu/2, mu/2) = Poisson(mu/2) - Poisson(mu/2)), sensitivities D2, D1:
        a D2^2/(2 mu) + min( ((2a - 1) D2^2 + 6 D1)/(4 mu^2),  3 D1/(2 mu) )."""
    a = m.mpf(alpha)
    gauss = a * l2_scaled**2 / (2 * mu)
    extra = min(((2 * a - 1) * l2_scaled**2 + 6 * l1_scaled) / (4 * mu**2),
                3 * l1_scaled / (2 * mu))
    return gauss + extra


def log_binomial(m, n, k):
    return m.loggamma(n + 1) - m.loggamma(k + 1) - m.loggamma(n - k + 1)


def zhu_wang_poisson(m, alpha, q, eps, coef=3):
    """Zhu & Wang 2019 (ICML, PMLR 97), general upper bound for the Poisson-subsampled
    mechanism at integer order alpha >= 2, from the base RDP curve eps(l), l = 2..alpha:
      1/(alpha-1) * log( (1-q)^(alpha-1) (alpha q - q + 1)
                         + C(alpha,2) q^2 (1-q)^(alpha-2) e^{eps(2)}
                         + 3 sum_{l=3}^{alpha} C(alpha,l) q^l (1-q)^(alpha-l) e^{(l-1) eps(l)} ).
    Evaluated in log space (log-sum-exp) so that large eps do not overflow. `coef` is the 3 of
    the l >= 3 terms; with coef = 1 and the Gaussian curve eps(l) = l/(2 z^2) the sum is exactly
    the subsampled-Gaussian moment A_alpha of Mironov et al. 2019 (used by --self-test)."""
    q = m.mpf(q)
    log_q, log_1mq = m.log(q), m.log1p(-q)
    logs = [(alpha - 1) * log_1mq + m.log(alpha * q - q + 1),
            log_binomial(m, alpha, 2) + 2 * log_q + (alpha - 2) * log_1mq + eps(2)]
    for l in range(3, alpha + 1):
        logs.append(m.log(coef) + log_binomial(m, alpha, l) + l * log_q
                    + (alpha - l) * log_1mq + (l - 1) * eps(l))
    top = max(logs)
    return (top + m.log(m.fsum(m.exp(v - top) for v in logs))) / (alpha - 1)


def composed_rdp(m, eps, q, steps, orders=RDP_ORDERS):
    """RDP of T rounds: per order, eps(a) if q == 1, else min(Zhu-Wang(a), eps(a)); times T."""
    cache = {}

    def base(l):
        if l not in cache:
            cache[l] = eps(l)
        return cache[l]

    out = []
    for a in orders:
        r = base(a) if q == 1 else min(zhu_wang_poisson(m, a, q, base), base(a))
        out.append(r * steps)
    return out


def rdp_to_dp(m, orders, rdp, delta):
    """(eps, delta) from RDP: per order a with RDP r,
         eps = 0                                  if delta^2 + expm1(-r) >= 0 (KL bound),
         eps = r + log1p(-1/a) - log(delta a)/(a-1)  otherwise (a > 1.01);
    the least over the orders (the first order on ties), floored at 0.
    Balle et al. 2020 (AISTATS, arXiv 1905.09982) Thm 21 = Canonne, Kamath & Steinke 2020
    (arXiv 2004.00010) Prop. 12, as in tensorflow_privacy 0.8.0 and dp-accounting 0.6.0."""
    delta = m.mpf(delta)
    best, best_order, best_rdp = None, None, None
    for a, r in zip(orders, rdp):
        if delta**2 + m.expm1(-r) >= 0:
            e = m.mpf(0)
        elif a > 1.01:
            e = r + m.log1p(-m.mpf(1) / a) - m.log(delta * a) / (a - 1)
        else:
            e = m.inf
        if best is None or e < best:
            best, best_order, best_rdp = e, a, r
    return max(m.mpf(0), best), best_order, best_rdp


# ---------------------------------------------------------------------------------------------
# Parameter sets.
# ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    mechanism: str  # "skellam" | "ddg"
    clip: float  # L2 clip c of one client's update (unscaled)
    dim: int  # padded dimension d (a power of two for the Hadamard rotation)
    beta: float  # conditional-rounding bias; 0 = unconditional
    bits: int | None  # SecAgg modulus 2^bits (None: derived from a given scale)
    n: int  # clients whose noise shares are summed (the survivors the noise is calibrated to)
    noise_multiplier: float  # z: central stddev = z * c, per-client stddev = z * c / sqrt(n)
    q: float  # Poisson client-sampling rate per round
    steps: int  # rounds T
    delta: float
    modclip_prob: float = DEFAULT_MODCLIP_PROB
    rho: float = 1.0
    scale: float | None = None  # given scale 1/gamma; None: derived from bits
    derived: dict = field(default_factory=dict)


BETA = math.exp(-0.5)

PARAMETER_SETS = [
    # name, c, d, beta, bits, n, z, q, T, delta
    ("emnist_b16", 2.0, 2**20, BETA, 16, 100, 1.0, 100 / 3400, 1500, 1 / 3400),
    ("emnist_b20_uncond", 2.0, 2**20, 0.0, 20, 100, 1.0, 100 / 3400, 1500, 1e-5),
    ("full_batch_n10", 1.0, 2**16, BETA, 12, 10, 1.5, 1.0, 100, 1e-6),
    ("n1000_q0.1", 0.5, 2**10, BETA, 18, 1000, 0.8, 0.1, 200, 1e-5),
    ("q0.01_T5000", 1.0, 2**18, 0.0, 14, 50, 1.2, 0.01, 5000, 1e-5),
    ("low_bits_b10", 1.0, 2**16, BETA, 10, 100, 2.0, 0.05, 100, 1e-5),
    ("tiny_b8_q0.5", 0.1, 2**12, BETA, 8, 20, 3.0, 0.5, 10, 1e-5),
    ("one_round", 1.0, 2**20, 0.0, 20, 1000, 0.5, 1.0, 1, 1e-5),
    ("b12_n100_d2^20", 1.0, 2**20, BETA, 12, 100, 1.0, 0.02, 500, 1e-5),
    ("z3_q0.005_delta1e-8", 1.0, 2**18, BETA, 16, 200, 3.0, 0.005, 2000, 1e-8),
]

# Rows with a given scale (bits then derived): small scales where the DDG tau slack matters.
GIVEN_SCALE_SETS = [
    # name, c, d, beta, scale, n, z, q, T, delta
    ("given_s13_tau", 1.0, 2**8, BETA, 13.0, 100, 0.8, 0.05, 100, 1e-5),
    ("given_s12_tau_uncond", 1.0, 2**8, 0.0, 12.0, 100, 1.0, 0.01, 50, 1e-5),
]


def build_cases():
    cases = []
    for mech in ("skellam", "ddg"):
        for name, c, d, beta, bits, n, z, q, t, delta in PARAMETER_SETS:
            cases.append(Case(f"{mech}/{name}", mech, c, d, beta, bits, n, z, q, t, delta))
        for name, c, d, beta, scale, n, z, q, t, delta in GIVEN_SCALE_SETS:
            cases.append(Case(f"{mech}/{name}", mech, c, d, beta, None, n, z, q, t, delta,
                              scale=scale))
    return cases


def derive_inputs(case):
    """Float64 inputs that the CSV prints and that every computation then starts from."""
    mp = mpmath.mp
    local_stddev = float(mp.mpf(case.noise_multiplier) * case.clip / mp.sqrt(case.n))
    k = float(k_stddevs_for(mp, case.modclip_prob))
    if case.scale is None:
        scale = float(heuristic_scale(mp, mp.mpf(local_stddev), mp.mpf(case.clip), case.bits,
                                      case.n, case.dim, mp.mpf(k), case.rho))
        # the inverse relation gives the same bits back (the width is exactly 2^bits at this
        # scale, so ask at a scale a hair below it)
        assert bits_needed(mp, scale * (1 - 1e-12), mp.mpf(local_stddev), mp.mpf(case.clip),
                           case.n, case.dim, mp.mpf(k), case.rho) == case.bits, case.name
    else:
        scale = case.scale
        case.bits = bits_needed(mp, scale, mp.mpf(local_stddev), mp.mpf(case.clip), case.n,
                                case.dim, mp.mpf(k), case.rho)
    return local_stddev, k, scale


def epsilon(m, case, local_stddev, scale):
    """(eps, opt_order, composed rdp at opt_order, D2', D1', tau, mu) for one case, in
    context m, from the float64 inputs."""
    mf = m.mpf
    local_stddev, scale = mf(local_stddev), mf(scale)
    c, d, n = mf(case.clip), case.dim, case.n
    l2 = inflated_l2_scaled(m, c * scale, case.beta, d)
    l1 = inflated_l1_scaled(m, l2, d)
    sigma_int = local_stddev * scale  # per-client stddev in integer units
    mu = n * sigma_int**2  # variance of the summed noise per coordinate, integer units
    if case.mechanism == "skellam":
        tau = mf(0)

        def base(a):
            return skellam_rdp(m, a, l2, l1, mu)
    else:
        tau = ddg_tau(m, sigma_int, n)

        def base(a):
            return ddg_rdp(m, a, l2, l1, sigma_int, n, tau, d)
    rdp = composed_rdp(m, base, case.q, case.steps)
    eps, order, r = rdp_to_dp(m, RDP_ORDERS, rdp, case.delta)
    return eps, order, r, l2, l1, tau, mu


# ---------------------------------------------------------------------------------------------
# Output.
# ---------------------------------------------------------------------------------------------

COLUMNS = [
    "name", "mechanism", "scale_source", "l2_clip", "dim", "beta", "bits", "num_clients",
    "noise_multiplier", "local_stddev", "modclip_prob", "k_stddevs", "rho", "scale", "q",
    "steps", "delta", "orders",
    "l2_sens_scaled", "l1_sens_scaled", "tau", "mu_scaled", "epsilon", "opt_order",
    "rdp_at_opt_order",
]


def r17(x):
    """A computed value: the nearest double, 17 significant digits (round-trips)."""
    return f"{float(x):.17g}"


def rin(x):
    """An input: Python repr of the double (shortest string that round-trips)."""
    return repr(float(x))


def compute_rows():
    mpmath.mp.dps = PREC_DIGITS
    cases, rows, f64_diffs = build_cases(), [], []
    for case in cases:
        local_stddev, k, scale = derive_inputs(case)
        eps, order, r, l2, l1, tau, mu = epsilon(mpmath.mp, case, local_stddev, scale)
        eps64 = epsilon(mpmath.fp, case, local_stddev, scale)[0]
        f64_diffs.append(abs(eps64 - float(eps)) / float(eps))
        case.derived = dict(local_stddev=local_stddev, k=k, scale=scale, eps=float(eps),
                            order=order)
        rows.append({
            "name": case.name, "mechanism": case.mechanism,
            "scale_source": "bits" if case.scale is None else "given",
            "l2_clip": rin(case.clip),
            "dim": str(case.dim), "beta": rin(case.beta), "bits": str(case.bits),
            "num_clients": str(case.n), "noise_multiplier": rin(case.noise_multiplier),
            "local_stddev": rin(local_stddev), "modclip_prob": rin(case.modclip_prob),
            "k_stddevs": rin(k), "rho": rin(case.rho), "scale": rin(scale), "q": rin(case.q),
            "steps": str(case.steps), "delta": rin(case.delta), "orders": ORDERS_LABEL,
            "l2_sens_scaled": r17(l2), "l1_sens_scaled": r17(l1), "tau": r17(tau),
            "mu_scaled": r17(mu), "epsilon": r17(eps), "opt_order": str(order),
            "rdp_at_opt_order": r17(r),
        })
    return cases, rows, f64_diffs


def write_csv(rows, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------
# Optional cross-check against google-research/federated distributed_dp/accounting_utils.py.
# ---------------------------------------------------------------------------------------------


def load_google(accounting_utils_path, tfp_dir):
    """Import google-research's accounting_utils.py unmodified. It does `import
    tensorflow_privacy as tfp` and calls `tfp.get_privacy_spent`; that package's top level
    imports TensorFlow, but its RDP module (privacy/analysis/rdp_accountant.py, 0.8.0, the
    version pinned by distributed_dp/requirements.txt) needs only numpy/scipy. The package's own
    switch `sys.skip_tf_privacy_import` skips the TensorFlow imports; the two functions
    accounting_utils uses are then attached from rdp_accountant."""
    import importlib.util

    sys.skip_tf_privacy_import = True
    sys.path.insert(0, tfp_dir)
    import tensorflow_privacy
    from tensorflow_privacy.privacy.analysis import rdp_accountant

    tensorflow_privacy.get_privacy_spent = rdp_accountant.get_privacy_spent
    tensorflow_privacy.compute_rdp = rdp_accountant.compute_rdp
    spec = importlib.util.spec_from_file_location("google_accounting_utils",
                                                  accounting_utils_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, getattr(tensorflow_privacy, "__version__", "?")


def cross_check(cases, au):
    import numpy as np

    worst = {"epsilon": 0.0, "scale": 0.0, "l2": 0.0, "tau": 0.0}
    print("\ncross-check against google-research accounting_utils.py "
          "(float64, tensorflow_privacy 0.8.0 conversion):")
    print(f"{'case':34} {'ours':>22} {'google':>22} {'rel diff':>10} orders")
    for case in cases:
        dv = case.derived
        if case.scale is None:
            g_scale = au.heuristic_scale_factor(dv["local_stddev"], case.clip, case.bits,
                                                case.n, case.dim, dv["k"], case.rho)
            worst["scale"] = max(worst["scale"], abs(g_scale - dv["scale"]) / dv["scale"])
        scale = dv["scale"]
        g_l2 = au.rounded_l2_norm_bound(case.clip * scale, case.beta, case.dim)
        mpmath.mp.dps = PREC_DIGITS
        ours_l2 = float(inflated_l2_scaled(mpmath.mp, mpmath.mpf(case.clip) * scale,
                                           case.beta, case.dim))
        worst["l2"] = max(worst["l2"], abs(g_l2 - ours_l2) / ours_l2)
        if case.mechanism == "skellam":
            g_eps, g_order = au.skellam_epsilon(
                scale, dv["local_stddev"] * np.sqrt(case.n), case.clip, case.beta, case.dim,
                case.q, case.steps, case.delta)
        else:
            g_eps, g_order = au.ddgauss_epsilon(
                1.0 / scale, dv["local_stddev"], case.n, case.clip, case.beta, case.dim,
                case.q, case.steps, case.delta)
            # tau exactly as google-research sums it, against ours
            sig = dv["local_stddev"] * scale
            g_tau = 10 * sum(math.exp(-2 * (math.pi * sig) ** 2 * (k / (k + 1)))
                             for k in range(1, case.n))
            ours_tau = float(ddg_tau(mpmath.mp, sig, case.n))
            if ours_tau > 0:
                worst["tau"] = max(worst["tau"], abs(g_tau - ours_tau) / ours_tau)
        rel = abs(g_eps - dv["eps"]) / dv["eps"]
        worst["epsilon"] = max(worst["epsilon"], rel)
        print(f"{case.name:34} {dv['eps']!r:>22} {float(g_eps)!r:>22} {rel:10.2e} "
              f"{dv['order']}/{int(g_order)}")
    print("max relative difference: " + ", ".join(f"{k} {v:.3e}" for k, v in worst.items()))
    return worst


def self_test():
    """Checks two building blocks against dp-accounting (a third code base):
    (a) Zhu-Wang's sum with coefficient 1 on the Gaussian curve l/(2 z^2) equals the exact RDP of
        the Poisson-subsampled Gaussian (dp_accounting's _compute_rdp_poisson_subsampled_gaussian);
    (b) rdp_to_dp equals dp_accounting.rdp.rdp_privacy_accountant.compute_epsilon."""
    from dp_accounting.rdp import rdp_privacy_accountant as dpa

    mp = mpmath.mp
    mp.dps = PREC_DIGITS
    worst_a = worst_b = 0.0
    for q, z in ((0.01, 0.8), (100 / 3400, 1.0), (0.1, 2.0), (0.5, 5.0)):
        theirs = dpa._compute_rdp_poisson_subsampled_gaussian(q, z, RDP_ORDERS)
        z2 = mp.mpf(z) ** 2
        ours = [zhu_wang_poisson(mp, a, q, lambda l: l / (2 * z2), coef=1) for a in RDP_ORDERS]
        for o, t in zip(ours, theirs):
            worst_a = max(worst_a, abs(float(o) - t) / float(o))
        for steps, delta in ((1000, 1e-5), (10, 1e-7)):
            rdp = [float(o) * steps for o in ours]
            e_t, o_t = dpa.compute_epsilon(list(RDP_ORDERS), rdp, delta)
            e_o, o_o, _ = rdp_to_dp(mp, RDP_ORDERS, [mp.mpf(r) for r in rdp], delta)
            worst_b = max(worst_b, abs(float(e_o) - e_t) / e_t)
            assert o_o == o_t, (q, z, steps, o_o, o_t)
    print(f"self-test vs dp-accounting: (a) subsampled-Gaussian RDP via Zhu-Wang with "
          f"coefficient 1: max rel diff {worst_a:.3e}; (b) RDP->DP conversion: {worst_b:.3e}")
    return max(worst_a, worst_b)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=CSV_PATH)
    ap.add_argument("--check", action="store_true",
                    help="recompute and compare with --out instead of writing it")
    ap.add_argument("--google", help="path to google-research/federated "
                    "distributed_dp/accounting_utils.py (kept outside this repository)")
    ap.add_argument("--tfp", help="directory holding the unpacked tensorflow_privacy 0.8.0 "
                    "wheel (the folder that contains tensorflow_privacy/)")
    ap.add_argument("--self-test", action="store_true",
                    help="also check building blocks against dp-accounting (pip install "
                    "dp-accounting==0.6.0)")
    ap.add_argument("--tolerance", type=float, default=1e-9)
    args = ap.parse_args()

    cases, rows, f64_diffs = compute_rows()

    print(f"{'case':34} {'epsilon':>22} {'order':>5} {'scale':>12} {'D2 (int)':>12} "
          f"{'tau':>10}")
    for row in rows:
        print(f"{row['name']:34} {row['epsilon']:>22} {row['opt_order']:>5} "
              f"{float(row['scale']):12.6g} {float(row['l2_sens_scaled']):12.6g} "
              f"{float(row['tau']):10.3g}")
    print(f"float64 evaluation of the same formulas (mpmath.fp) vs {PREC_DIGITS}-digit: "
          f"max relative difference {max(f64_diffs):.3e}")

    status = 0
    if args.check:
        stored = {r["name"]: r for r in read_csv(args.out)}
        worst = 0.0
        for row in rows:
            old = stored.get(row["name"])
            if old is None:
                print(f"missing in {args.out}: {row['name']}")
                status = 1
                continue
            e_new, e_old = float(row["epsilon"]), float(old["epsilon"])
            worst = max(worst, abs(e_new - e_old) / e_old)
        print(f"vs {os.path.relpath(args.out)}: max relative difference {worst:.3e}")
        if worst > args.tolerance:
            status = 1
    else:
        write_csv(rows, args.out)
        print(f"wrote {len(rows)} rows to {os.path.relpath(args.out)}")

    if args.self_test and self_test() > args.tolerance:
        status = 1

    if args.google:
        if not args.tfp:
            ap.error("--google needs --tfp")
        au, version = load_google(args.google, args.tfp)
        print(f"tensorflow_privacy version loaded: {version}")
        worst = cross_check(cases, au)
        if worst["epsilon"] > args.tolerance:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
