"""Resume inside a run, in-process, twice and in later phases (methods/checkpoints.py).

Every loop resumes through one helper (`resumable`), and the conformance battery
(tests/test_conformance.py) interrupts every method right after its first checkpoint and
resumes it bitwise. Here, the loops with several phases or generator states, and the round
loop, go further:

Each loop is interrupted by an exception raised right after a chosen checkpoint is saved (as a
kill there would leave it), started again, and must end with the record of a run that was never
interrupted, bit for bit (all but timings, environment and the checkpoints' own account). Two
interruptions per loop, the second in a later phase or further on, so that a run resumed once
and then interrupted again resumes too. Real processes killed with SIGKILL are
tests/test_checkpoints.py's (one round loop, one generator); these run in seconds each because
they start no process.

The same resumes are then run with the checkpoints read onto a non-CPU device (`meta`, which
has shapes but no data, so that nothing read there can be used): how this suite read them
before (`map_location=<the run's device>`). On CUDA that moved the saved random generators'
states to the GPU and `torch.set_rng_state` / `Generator.set_state` raised "RNG state must be
a torch.ByteTensor" on every retry. That planted old behaviour must fail for every loop; with
the fix (read onto the CPU, then move what is not a generator's state), resume is bitwise.

A pitfall of resumable loops this guards: resuming the weights but not what the loop
accumulates besides them (the validation selection, the communication log, per-client
states, an optimiser's moments, a generator's RNG) gives a run that finishes but not the
same one."""
import pytest
import torch

import bench.methods.checkpoints as checkpoints
from bench.config import parse_overrides, resolve
from bench.methods.checkpoints import Checkpoint, RngState, to_device
from bench.runner import execute
from helpers import TINY_FF, comparable

pytestmark = pytest.mark.slow

FAST = ["local_epochs=1", "rounds=4"]
# kind: (method, --set values, the interruptions: (phase, after its n-th save in the attempt))
KINDS = {
    "fedavg": ("fedavg", FAST, [("rounds", 1), ("rounds", 2)]),
    # a generator module, then the local mode (its server classifier is `fit`, as
    # centralized's epochs are)
    "federatedfactory": ("federatedfactory",
                         [*TINY_FF, "federatedfactory.gen_images_seen=256",
                          "federatedfactory.modes=server,local"],
                         [("module", 2), ("ff/local", 2)]),
    # the clients' decoders, then the server classifier
    "fedcvae": ("fedcvae", ["fedcvae.vae_epochs=2", "fedcvae.samples_per_class=16",
                            "fedcvae.classifier_epochs=3"],
                [("fedcvae/decoders", 3), ("fedcvae/server", 1)]),
    # the clients' classifiers, then the generator / student epochs
    "dense": ("dense", [*FAST, "rounds=2", "dense.epochs=4", "dense.g_steps=1",
                        "dense.s_steps=2", "dense.batch_size=32"],
              [("dense/teachers", 4), ("dense/distillation", 2)]),
}


class Interrupted(Exception):
    """Raised where a kill would have stopped the run."""


def config_of(kind):
    method, sets, _ = KINDS[kind]
    return resolve("digits", method, "silos", 0, parse_overrides(sets))


def run(config, out, **kwargs):
    return execute(config, torch.device("cpu"), cache_dir=out / "cache",
                   checkpoint_path=out / "run.ckpt", checkpoint_every=0, **kwargs)[0]


def interrupt_after(monkeypatch, phase: str, n: int) -> None:
    """Checkpoint.save raises Interrupted right after the n-th save of `phase` (written)."""
    save, count = Checkpoint.save, {"n": 0}

    def saving(self, name, at, state):
        save(self, name, at, state)
        if name == phase:
            count["n"] += 1
            if count["n"] == n:
                raise Interrupted(f"{phase} after {at}")
    monkeypatch.setattr(Checkpoint, "save", saving)


def interrupted_then_resumed(kind, out, monkeypatch):
    config = config_of(kind)
    for phase, n in KINDS[kind][2]:
        with monkeypatch.context() as m:
            interrupt_after(m, phase, n)
            with pytest.raises(Interrupted):
                run(config, out)
    return run(config, out)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Each kind's record, computed once without interruption."""
    made = {}

    def get(kind):
        if kind not in made:
            made[kind] = run(config_of(kind), tmp_path_factory.mktemp(kind))
        return made[kind]
    return get


@pytest.mark.parametrize("kind", KINDS)
def test_an_interrupted_loop_resumes_to_the_uninterrupted_record(kind, uninterrupted, tmp_path,
                                                               monkeypatch):
    record = interrupted_then_resumed(kind, tmp_path, monkeypatch)
    assert comparable(record) == comparable(uninterrupted(kind))
    # the last interruption's phase was resumed, not recomputed
    last_phase = KINDS[kind][2][-1][0]
    assert any(r["phase"] == last_phase for r in record.checkpoints["resumed"]), \
        record.checkpoints


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoints_read_onto_the_runs_device_fail_to_resume(kind, uninterrupted, tmp_path,
                                                              monkeypatch):
    """The planted old behaviour: checkpoints read with a non-CPU map_location."""
    monkeypatch.setattr(checkpoints, "MAP_LOCATION", "meta")
    try:
        record = interrupted_then_resumed(kind, tmp_path, monkeypatch)
    except (TypeError, RuntimeError, NotImplementedError):
        return  # e.g. "RNG state must be a torch.ByteTensor", "Cannot copy out of meta tensor"
    assert comparable(record) != comparable(uninterrupted(kind)), \
        "a resume from tensors read off the CPU went unnoticed"


def test_a_resumed_state_moves_to_the_device_but_generator_states_stay_on_the_cpu():
    """What a CUDA resume needs: weights, optimiser moments and server states on the run's
    device, every RNG state a CPU byte tensor (torch takes nothing else)."""
    gen = torch.Generator().manual_seed(3)
    state = {"step": 4, "unet": {"w": torch.ones(2)}, "moments": [torch.zeros(3)],
             "batches": RngState(gen.get_state()), "global": RngState(torch.get_rng_state())}
    moved = to_device(state, torch.device("meta"))
    assert moved["unet"]["w"].device.type == "meta" and moved["moments"][0].is_meta
    assert moved["step"] == 4
    for key in ("batches", "global"):
        assert moved[key].tensor.device.type == "cpu" and moved[key].tensor.dtype == torch.uint8
        torch.Generator().set_state(moved[key].tensor)  # takes it
    with pytest.raises((TypeError, RuntimeError)):  # what the old reading gave torch
        torch.Generator().set_state(state["batches"].tensor.to("meta"))


def test_a_server_state_held_in_a_dataclass_moves_to_the_device_too():
    """SCAFFOLD's controls and the adaptive servers' moments are dataclasses of tensor dicts:
    left on the CPU by a resume, their first aggregate on a GPU would mix devices (a reviewer
    found it; a resume on the CPU cannot show it)."""
    from bench.methods.fedopt import Moments
    from bench.methods.scaffold import ScaffoldServer

    state = {"server": Moments({"w": torch.zeros(2)}, {"w": torch.ones(2)}),
             "scaffold": ScaffoldServer({"w": torch.ones(3)}),
             "rng": RngState(torch.get_rng_state())}
    moved = to_device(state, torch.device("meta"))
    assert isinstance(moved["server"], Moments) and isinstance(moved["scaffold"], ScaffoldServer)
    assert moved["server"].m["w"].is_meta and moved["server"].v["w"].is_meta
    assert moved["scaffold"].c["w"].is_meta
    assert moved["rng"].tensor.device.type == "cpu"


def test_a_checkpoint_of_another_clients_at_once_is_discarded(tmp_path, monkeypatch, capsys):
    """--clients-at-once changes the bits (vectorised clients equal looped ones to float
    tolerance only), so it is part of a checkpoint's identity (bench/runner.py)."""
    config = resolve("digits", "fedavg", "silos", 0, parse_overrides(FAST))
    with monkeypatch.context() as m:
        interrupt_after(m, "rounds", 2)
        with pytest.raises(Interrupted):
            run(config, tmp_path)
    record = run(config, tmp_path, clients_at_once=2)
    assert record.checkpoints["resumed"] == []
    err = capsys.readouterr().err
    assert "written by other clients_at_once: discarded" in err, err
