"""The methods' updates on tiny analytic models, against numbers derived by hand.

Each client's loss is the 1-D quadratic f_i(w) = (w - b_i)^2 / 2, gradient w - b_i. Local
training is simulated with plain SGD (w <- w - lr * grad) through the same hooks the harness
calls, so these tests check each method's own arithmetic, both halves.
"""
import pytest
import torch

from bench.methods.fedavg import FedAvg
from bench.methods.fedprox import FedProx
from bench.methods.scaffold import Scaffold, ScaffoldServer
from helpers import Scalar, one_round, readme_example_class


def test_fedavg_weights_by_sample_count():
    """Client models after 1 step of lr 0.5 from 0: 0.5*b. b = (2, -2), n = (1, 3):
    w = (1 * 1 + 3 * -1) / 4 = -0.5."""
    w, _, _ = one_round(FedAvg(), [2.0, -2.0], 0.0, None, {}, lr=0.5, steps=1, n_total=2,
                        weights=[1, 3])
    assert w == pytest.approx(-0.5, abs=1e-12)


def test_fedprox_proximal_gradient():
    """b = 2, w_t = 0, mu = 0.5, lr = 0.1, two steps:
    step 1: g = (0 - 2) + 0.5 * (0 - 0) = -2      -> w = 0.2
    step 2: g = (0.2 - 2) + 0.5 * (0.2 - 0) = -1.7 -> w = 0.37
    (FedAvg would give 0.2 then 0.2 + 0.18 = 0.38.)"""
    w, _, _ = one_round(FedProx(FedProx.Params(mu=0.5)), [2.0], 0.0, None, {}, lr=0.1, steps=2,
                        n_total=1)
    assert w == pytest.approx(0.37, abs=1e-12)
    w0, _, _ = one_round(FedAvg(), [2.0], 0.0, None, {}, lr=0.1, steps=2, n_total=1)
    assert w0 == pytest.approx(0.38, abs=1e-12)


def _scaffold_setup():
    """x = 0, c = 0.5, c_1 = 0.25, c_2 = 1.0, b = (1, -3), lr = 0.1, K = 2.
    Client 1 (correction c - c_1 = 0.25): y = 0.075, then 0.075 + 0.0675 = 0.1425;
      option II: c_1+ = c_1 - c + (x - y)/(K lr) = 0.25 - 0.5 - 0.1425/0.2 = -0.9625,
      dy_1 = 0.1425, dc_1 = -1.2125.
    Client 2 (correction -0.5): y = -0.25, then -0.475;
      c_2+ = 1.0 - 0.5 + 0.475/0.2 = 2.875, dy_2 = -0.475, dc_2 = 1.875."""
    method = Scaffold()
    server = ScaffoldServer({"w": torch.tensor([0.5], dtype=torch.float64)})
    states = {0: {"w": torch.tensor([0.25], dtype=torch.float64)},
              1: {"w": torch.tensor([1.0], dtype=torch.float64)}}
    return method, server, states


@pytest.mark.parametrize("server_lr,n_total,x_new,c_new", [
    # x = 0 + eta_g * (0.1425 - 0.475) / 2;  c = 0.5 + (-1.2125 + 1.875) / N
    (1.0, 2, -0.16625, 0.83125),
    (0.5, 2, -0.083125, 0.83125),
    (1.0, 4, -0.16625, 0.665625),  # two of four clients took part: c moves by sum / 4
])
def test_scaffold_option_two(server_lr, n_total, x_new, c_new):
    method, server, states = _scaffold_setup()
    method = Scaffold(Scaffold.Params(server_lr=server_lr))
    x, server, states = one_round(method, [1.0, -3.0], 0.0, server, states, lr=0.1, steps=2,
                                  n_total=n_total)
    assert x == pytest.approx(x_new, abs=1e-12)
    assert float(server.c["w"]) == pytest.approx(c_new, abs=1e-12)
    assert float(states[0]["w"]) == pytest.approx(-0.9625, abs=1e-12)
    assert float(states[1]["w"]) == pytest.approx(2.875, abs=1e-12)


def test_scaffold_uses_steps_actually_taken():
    """One client, b = 1, c = c_1 = 0, lr 0.1: K = 3 steps give y = 0.1, 0.19, 0.271;
    c_1+ = (0 - 0.271) / (3 * 0.1) = -0.90333..."""
    method = Scaffold()
    x, server, states = one_round(method, [1.0], 0.0, None, {}, lr=0.1, steps=3, n_total=1)
    assert float(states[0]["w"]) == pytest.approx(-0.271 / 0.3, abs=1e-12)
    assert x == pytest.approx(0.271, abs=1e-12)


def test_readme_example_method_is_one_subclass_and_does_what_it_says():
    """FedExP with eps = 0.25, two clients of one sample each, b = 4 and -2, lr 0.5, one step
    from 0: they end at 2 and -1, so D = -2 and 1, mean D = -0.5, sum p |D|^2 = 2.5 and the
    step is max(1, 2.5 / (2 (0.25 + 0.25))) = 2.5: w = 2.5 * 0.5 = 1.25 (FedAvg: 0.5). With
    b = 2 and 0 (ends at 1 and 0) the ratio is 0.5 / 1 and the step stays 1: w = 0.5."""
    FedExP = readme_example_class()
    method = FedExP(FedExP.Params(eps=0.25))
    x, _, _ = one_round(method, [4.0, -2.0], 0.0, None, {}, lr=0.5, steps=1, n_total=2)
    assert x == pytest.approx(1.25, abs=1e-12)
    x, _, _ = one_round(method, [2.0, 0.0], 0.0, None, {}, lr=0.5, steps=1, n_total=2)
    assert x == pytest.approx(0.5, abs=1e-12)
    # sample weights: 3 samples at b = 4 and 1 at -2 end at 2 and -1: mean D = -1.25,
    # sum p |D|^2 = 3.25, step 3.25 / (2 (1.5625 + 0.25)) = 0.897 -> 1: w = 1.25
    x, _, _ = one_round(method, [4.0, -2.0], 0.0, None, {}, lr=0.5, steps=1, n_total=2,
                        weights=[3, 1])
    assert x == pytest.approx(1.25, abs=1e-12)


def test_fedavgm_is_hsu_et_al_server_momentum():
    """FedAvgM with beta = 0.5, eta = 0.5, one client, b = 2, lr 0.5, one step: round 1 from 0
    (client at 1): v = 0 - 1 = -1, w = 0 + 0.5 = 0.5; round 2 from 0.5 (client at 1.25):
    v = 0.5 (-1) + (0.5 - 1.25) = -1.25, w = 0.5 + 0.625 = 1.125. FedAvg gives 1 then 1.5;
    beta = 0 and eta = 1 are FedAvg."""
    from bench.methods.fedavgm import FedAvgM

    method = FedAvgM(FedAvgM.Params(beta=0.5, server_lr=0.5))
    x, server, states = one_round(method, [2.0], 0.0, None, {}, lr=0.5, steps=1, n_total=1)
    assert x == pytest.approx(0.5, abs=1e-12) and float(server["w"]) == pytest.approx(-1.0)
    x, server, states = one_round(method, [2.0], x, server, states, lr=0.5, steps=1, n_total=1)
    assert x == pytest.approx(1.125, abs=1e-12) and float(server["w"]) == pytest.approx(-1.25)
    plain = FedAvgM(FedAvgM.Params(beta=0.0, server_lr=1.0))
    x, server, states = one_round(plain, [2.0], 0.0, None, {}, lr=0.5, steps=1, n_total=1)
    x, _, _ = one_round(plain, [2.0], x, server, states, lr=0.5, steps=1, n_total=1)
    assert x == pytest.approx(1.5, abs=1e-12)
    for bad in ({"beta": 1.0}, {"server_lr": 0.0}):
        with pytest.raises(ValueError, match="fedavgm\\."):
            FedAvgM.Params(**bad)


def _algorithm_2(rule, eta, beta1, beta2, tau, deltas):
    """Reddi et al. 2021, Algorithm 2 on scalars, written out from the paper: m_{-1} = 0,
    v_{-1} = tau^2; per round, m = beta1 m + (1 - beta1) d, v by `rule`, x += eta m /
    (sqrt(v) + tau). `deltas(x)` is the round's pseudo-gradient from x."""
    x, m, v = 0.0, 0.0, tau * tau
    xs = []
    for _ in range(2):
        d = deltas(x)
        m = beta1 * m + (1 - beta1) * d
        if rule == "adagrad":
            v = v + d * d
        elif rule == "yogi":
            v = v - (1 - beta2) * d * d * (1 if v > d * d else -1 if v < d * d else 0)
        else:
            v = beta2 * v + (1 - beta2) * d * d
        x = x + eta * m / (v ** 0.5 + tau)
        xs.append(x)
    return xs


@pytest.mark.parametrize("name,rule", [("fedadam", "adam"), ("fedyogi", "yogi"),
                                       ("fedadagrad", "adagrad")])
def test_adaptive_server_optimisers_follow_algorithm_2(name, rule):
    """One client, b = 2, lr 0.5, one step from x: it ends at x + (2 - x) / 2, so the
    pseudo-gradient is 1 - x / 2. Two rounds at the defaults and at eta = 0.5, tau = 0.1,
    beta1 = 0.5, beta2 = 0.9 (so that every term matters), against Algorithm 2 written out.
    Round 1 at FedAdam's defaults by hand: m = 0.1, v = 0.99e-6 + 0.01, x = 0.01 x 0.1 /
    (sqrt(0.01000099) + 0.001) = 0.00990050..."""
    from bench.methods.registry import METHODS

    cls = METHODS[name]
    # tau = 2: v starts at 4 > Delta^2 (about 1), where Yogi's v falls and Adam's and
    # Adagrad's do not (a Yogi without its sign would pass the first two cases)
    for given in ({}, {"server_lr": 0.5, "tau": 0.1, "beta1": 0.5,
                       **({} if rule == "adagrad" else {"beta2": 0.9})},
                  {"tau": 2.0, **({} if rule == "adagrad" else {"beta2": 0.5})}):
        p = cls.Params(**given)
        method = cls(p)
        x, server, states = one_round(method, [2.0], 0.0, None, {}, lr=0.5, steps=1, n_total=1)
        x2, server, _ = one_round(method, [2.0], x, server, states, lr=0.5, steps=1, n_total=1)
        expected = _algorithm_2(rule, p.server_lr, p.beta1, getattr(p, "beta2", None), p.tau,
                                lambda x: 1 - x / 2)
        assert [x, x2] == pytest.approx(expected, abs=1e-12), given
    if name == "fedadam":
        x, _, _ = one_round(cls(), [2.0], 0.0, None, {}, lr=0.5, steps=1, n_total=1)
        assert x == pytest.approx(0.001 / (0.01000099 ** 0.5 + 0.001), abs=1e-12)
        assert x == pytest.approx(0.00990050, abs=1e-7)


def test_adaptive_servers_start_v_at_tau_squared_and_differ_in_v():
    """The pitfall of starting v at 0 (some implementations): the first step would be
    eta m / (|(1 - beta2)^(1/2) Delta| + tau); Algorithm 2's v_{-1} = tau^2 is kept. And the
    three rules give three different second moments from the same pseudo-gradient: Adagrad
    tau^2 + D^2, Adam beta2 tau^2 + (1 - beta2) D^2, Yogi (tau^2 < D^2) tau^2 + (1 - beta2) D^2."""
    from bench.methods.registry import METHODS

    vs = {}
    for name in ("fedadam", "fedyogi", "fedadagrad"):
        method = METHODS[name](METHODS[name].Params(tau=0.1))
        server = method.init_server(Scalar(), {"w": torch.tensor([0.0], dtype=torch.float64)})
        assert float(server.v["w"]) == pytest.approx(0.01) and float(server.m["w"]) == 0
        _, server, _ = one_round(method, [2.0], 0.0, server, {}, lr=0.5, steps=1, n_total=1)
        vs[name] = float(server.v["w"])
    assert vs["fedadagrad"] == pytest.approx(0.01 + 1.0)
    assert vs["fedadam"] == pytest.approx(0.99 * 0.01 + 0.01 * 1.0)
    assert vs["fedyogi"] == pytest.approx(0.01 + 0.01 * 1.0)
    # Yogi where v > Delta^2 (tau = 2: v = 4): v falls by (1 - beta2) Delta^2
    yogi = METHODS["fedyogi"](METHODS["fedyogi"].Params(tau=2.0))
    _, server, _ = one_round(yogi, [2.0], 0.0, None, {}, lr=0.5, steps=1, n_total=1)
    assert float(server.v["w"]) == pytest.approx(4.0 - 0.01 * 1.0)


def test_adaptive_servers_refuse_meaningless_settings():
    from bench.methods.registry import METHODS

    for name, bad in (("fedadam", {"tau": 0.0}), ("fedyogi", {"beta2": 1.0}),
                      ("fedadagrad", {"server_lr": -0.1}), ("fedadam", {"beta1": 1.0})):
        with pytest.raises(ValueError, match=f"{name}\\."):
            METHODS[name].Params(**bad)
