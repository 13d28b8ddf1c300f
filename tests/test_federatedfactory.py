"""FederatedFactory: its parts, its determinism, and exact unlearning, on tiny settings."""
import contextlib
import dataclasses
import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main
from bench.methods.synthesis import sample_grid
from bench.methods.federatedfactory.network import build_unet
from bench.methods.federatedfactory.params import PRESETS, FFParams
from bench.methods.federatedfactory.sampler import load_unet, sample
from bench.methods.federatedfactory.modules import train_module
from bench.methods.synthesis import image_seeds, shares
from bench.methods.models import count_parameters
from bench.report.tables import records_frame
from bench.runner import execute
from bench.store import RecordStore
from helpers import TINY_FF_CLI, ff_config



def test_generator_parameter_counts_pinned():
    assert count_parameters(build_unet(FFParams(), 1, 8)) == 651_041
    paper = FFParams(**PRESETS["paper"])
    n = count_parameters(build_unet(paper, 3, 32))
    assert n == 49_062_787  # the authors' generator: about 50M parameters at 32 px


def test_shares_are_proportional_and_exact():
    assert shares({0: 30, 1: 10}, 100) == {0: 75, 1: 25}
    assert shares({2: 1, 5: 1, 7: 1}, 10) == {2: 4, 5: 3, 7: 3}  # remainder to the lowest id
    assert shares({}, 10) == {}
    assert sum(shares({0: 7, 1: 13, 2: 1}, 301).values()) == 301


def test_image_seeds_do_not_depend_on_count():
    assert image_seeds(1, 3, 4, 10)[:5] == image_seeds(1, 3, 4, 5)
    assert image_seeds(1, 3, 4, 5) != image_seeds(1, 3, 5, 5)  # another module, other seeds


def test_each_image_has_its_own_seed_whatever_the_batch():
    p = FFParams(gen_images_seen=128, sampler_steps=4)
    state = train_module(p, torch.rand(20, 1, 8, 8) * 2 - 1, seed=0)
    unet = load_unet(p, state, 1, 8, "cpu")
    seeds = list(range(100, 112))
    whole = sample(unet, FFParams(sampler_steps=4, sample_batch_size=12), seeds, 1, 8, "cpu")
    small = sample(unet, FFParams(sampler_steps=4, sample_batch_size=5), seeds, 1, 8, "cpu")
    prefix = sample(unet, FFParams(sampler_steps=4, sample_batch_size=12), seeds[:4], 1, 8, "cpu")
    # batching changes nothing but float rounding: at most one grey level
    assert (whole.int() - small.int()).abs().max() <= 1
    assert (whole[:4].int() - prefix.int()).abs().max() <= 1
    assert not torch.equal(whole[0], whole[1])


@pytest.mark.parametrize("formulation, sampler", [("ddpm", "ddim"), ("ddpm", "dpmsolver++"),
                                                  ("ddpm", "heun"), ("edm", "heun")])
def test_samplers_give_images_in_range(formulation, sampler):
    p = FFParams(formulation=formulation, gen_images_seen=64, sampler=sampler, sampler_steps=3)
    unet = load_unet(p, train_module(p, torch.rand(8, 1, 8, 8) * 2 - 1, seed=1), 1, 8, "cpu")
    imgs = sample(unet, p, [1, 2, 3], 1, 8, "cpu")
    assert imgs.dtype == torch.uint8 and imgs.shape == (3, 1, 8, 8)


def test_module_training_is_deterministic():
    p = FFParams(gen_images_seen=128)
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    a, b = train_module(p, x, seed=3), train_module(p, x, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_run_records_both_modes_bytes_and_diagnostics(tmp_path):
    record, artifacts = execute(ff_config(), torch.device("cpu"), cache_dir=tmp_path)
    m = record.metrics
    assert set(m.variants) == {"server", "local", "local_plain"}
    assert m.headline_variant == "server"  # the first of its modes
    assert m.selected == m.variants["server"].selected
    extra = record.extra
    assert extra["synthetic_per_class"] == [16] * 10
    assert len(extra["modules"]) == 10 and {e["cache"] for e in extra["modules"]} == {"miss"}
    assert set(extra["memorisation"]) == {str(c) for c in range(10)}
    comm = record.communication
    assert set(comm) == set(m.variants) and comm["local"] == comm["local_plain"]
    assert comm["server"].rounds == 1
    assert comm["server"].up_bytes == 10 * 651_041 * 4  # ten modules at float32
    # local mode: every client also sends its classifier up and gets the others' modules
    assert comm["local"].up_bytes > comm["server"].up_bytes
    assert comm["local"].down_bytes == 9 * comm["server"].up_bytes
    for phase in ("modules", "sampling", "classifier_server", "classifier_local"):
        assert record.timings[phase] > 0
    # the audit: the modules (every variant), and local mode's classifiers, which that mode
    # sends to the server (the old audit left them out), on the same validation non-members
    audit = record.audit
    modules, local = audit["shared"], audit["shared/local"]
    assert modules.artefact == "each client's generative modules"
    assert local.artefact.startswith("each client's local classifier")
    assert local == audit["shared/local_plain"] and "shared/server" not in audit
    assert len(modules.per_artefact_auc) == len(local.per_artefact_auc) == 10
    assert modules.non_members_from == local.non_members_from == "validation"
    assert modules.null_holds and local.null_holds, (modules, local)
    frame = records_frame([record]).set_index("method")  # each row: its variant's artefacts
    assert frame.loc["federatedfactory[local]", "membership_auc"] == local.auc
    assert frame.loc["federatedfactory[server]", "membership_auc"] == modules.auc
    assert artifacts["samples"].dtype == np.uint8 and artifacts["samples"].ndim == 2
    again, _ = execute(ff_config(), torch.device("cpu"), cache_dir=tmp_path)
    assert {e["cache"] for e in again.extra["modules"]} == {"hit"}
    assert again.metrics == record.metrics  # cached modules change nothing


def _without_client_images(monkeypatch, client: int):
    """Load digits with every training image of `client` (silos: class `client`) replaced by
    noise: a run that never had the client's images."""
    import bench.runner as runner

    real = runner.cached_dataset("digits", None)
    x = real.x_train.clone()
    held = real.y_train == client
    x[held] = torch.randint(0, 256, x[held].shape, generator=torch.Generator().manual_seed(9),
                            dtype=torch.uint8)
    replaced = dataclasses.replace(real, x_train=x)
    monkeypatch.setattr(runner, "cached_dataset", lambda name, root=None: replaced)


def _forget_then_compare_with_never_had(tmp_path, monkeypatch, ran=None, cache=None):
    """Forget client 3 through the CLI; then run the same config on data where client 3's
    images are noise, training its generators from scratch (or finding them in `cache`, a
    cache of such a never-had run: its keys cover the noise images). `ran`: a results folder
    where the run to unlearn is already stored (a copy is used), else it is run here. Returns
    both records and both sample grids, the never-had run's cache and a copy of the results
    folder as it was before unlearning."""
    out, before = tmp_path / "results", tmp_path / "before_unlearning"
    longer = ["federatedfactory.classifier_epochs=10"]  # so that class 3 is known before
    if ran is None:
        assert main(["run", "--methods", "federatedfactory", "--splits", "silos",
                     "--out", str(out), *TINY_FF_CLI, "--set", longer[0]]) == 0
        shutil.copytree(out, before)
    else:
        shutil.copytree(ran, out)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["unlearn", "--run", ff_config(extra=longer).run_id[:8], "--clients", "3",
                     "--out", str(out)]) == 0
    forgot = ff_config(extra=[*longer, "federatedfactory.exclude_clients=3"])
    path = out / "runs/digits/federatedfactory" / f"{forgot.run_id}.json"
    after = RecordStore.read(path)
    grid_after = np.array(Image.open(path.with_name(after.artifacts["samples"])))
    fresh = tmp_path / "fresh"
    if cache is not None:
        shutil.copytree(cache, fresh)
    with monkeypatch.context() as m:
        _without_client_images(m, 3)
        never, artifacts = execute(forgot, torch.device("cpu"), cache_dir=fresh)
    return printed.getvalue(), after, grid_after, never, artifacts["samples"], fresh, before


@pytest.fixture(scope="module")
def unlearned(tmp_path_factory):
    """The unlearning proof's two sides, computed once for this module."""
    with pytest.MonkeyPatch.context() as m:
        return _forget_then_compare_with_never_had(tmp_path_factory.mktemp("unlearn"), m)


@pytest.mark.slow
def test_unlearning_is_exact_and_never_reads_the_forgotten_images(unlearned):
    """The unlearned classifiers, metrics, diagnostics and sample grid are bitwise those of a
    run that never had client 3's images at all (its generators trained from scratch); class 3
    (no other client holds it) falls to 0 % in both modes (docs/methods.md, "Exact
    unlearning", for the default preset's numbers)."""
    printed, after, grid_after, never, grid_never, *_ = unlearned
    assert "3 (forgotten)" in printed
    assert {e["cache"] for e in after.extra["modules"]} == {"hit"}  # nothing retrained
    assert all(e["client"] != 3 for e in after.extra["modules"])
    assert after.extra["synthetic_per_class"][3] == 0
    assert {e["cache"] for e in never.extra["modules"]} == {"miss"}
    assert never.extra["classifier_sha256"] == after.extra["classifier_sha256"]
    assert never.metrics == after.metrics
    assert never.extra["memorisation"] == after.extra["memorisation"]
    assert np.array_equal(grid_never, grid_after)  # no real image of client 3 in the record
    u = after.unlearning
    assert u["forgotten_classes"] == [3]
    for mode in ("server", "local"):
        assert u["modes"][mode]["per_class_after"][3] == 0.0
    # the tiny test generators are too weak for the server to know class 3 even before; in
    # local mode client 3's own classifier knew it
    assert u["modes"]["local"]["per_class_before"][3] > 0.05  # 4 of 37 images, then none


@pytest.mark.slow
def test_the_unlearning_proof_fails_when_forgotten_images_are_read(unlearned, tmp_path,
                                                                   monkeypatch):
    """Plant the pitfall the proof is for (the diagnostics reading every client's training
    images, as this suite's first version did): the two sides then differ. (The generators
    come from the proof's never-had cache and the run to unlearn from the proof's folder: the
    plant is in the diagnostics, which unlearning recomputes, not in them.)"""
    import bench.methods.oneshot as oneshot

    def every_client(synth_x, synth_y, real_x, real_y, n_classes, per_class=8):
        import bench.runner as runner

        data = runner.cached_dataset("digits", None)
        return sample_grid(synth_x, synth_y, data.x_train, data.y_train, n_classes, per_class)
    monkeypatch.setattr(oneshot, "sample_grid", every_client)
    _, after, grid_after, never, grid_never, *_ = _forget_then_compare_with_never_had(
        tmp_path, monkeypatch, ran=unlearned[-1], cache=unlearned[-2])
    assert never.extra["classifier_sha256"] == after.extra["classifier_sha256"]
    assert not np.array_equal(grid_never, grid_after)


@pytest.fixture(scope="module")
def three_clients_cache(tmp_path_factory):
    """One generator cache for the runs of 3 clients under Dirichlet 1.0 (content-keyed: a run
    finds what an earlier one trained)."""
    return tmp_path_factory.mktemp("three_clients_cache")


@pytest.mark.slow
def test_forgetting_a_client_whose_classes_others_hold_forgets_no_class(tmp_path, capsys,
                                                                        three_clients_cache):
    out = tmp_path / "results"
    args = ["--splits", "dirichlet:1.0", "--set", "n_clients=3"]
    (out / "cache").parent.mkdir(parents=True)
    (out / "cache").symlink_to(three_clients_cache)  # generators shared with the test below
    assert main(["run", "--methods", "federatedfactory", *args, "--out", str(out),
                 *TINY_FF_CLI]) == 0
    run_id = ff_config("dirichlet:1.0", ["n_clients=3"]).run_id
    capsys.readouterr()
    assert main(["unlearn", "--run", run_id, "--clients", "0", "--out", str(out)]) == 0
    assert "(forgotten)" not in capsys.readouterr().out


def test_unlearn_rejects_bad_input(tmp_path, capsys):
    assert main(["unlearn", "--run", "ffff", "--clients", "1", "--out", str(tmp_path)]) == 2
    assert "no stored run with id 'ffff'" in capsys.readouterr().err


@pytest.mark.slow
def test_unlearn_refuses_a_run_computed_by_other_code(unlearned, tmp_path, capsys, monkeypatch):
    out = tmp_path / "results"
    shutil.copytree(unlearned[-1], out)  # the proof's run, as stored before it was unlearned
    run_id = ff_config(extra=["federatedfactory.classifier_epochs=10"]).run_id
    capsys.readouterr()
    # clients it does not have, or all of them: one line, exit 2, nothing trained
    for clients, needle in (("99", "--clients: clients [99] do not exist"),
                            (",".join(map(str, range(10))), "leaves out all 10 clients")):
        assert main(["unlearn", "--run", run_id, "--clients", clients, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    monkeypatch.setattr("bench.provenance.code_fingerprint", lambda method, dataset: "changed code")
    assert main(["unlearn", "--run", run_id, "--clients", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "computed by other code" in err[0]


@pytest.mark.slow
def test_works_under_dirichlet_and_iid(three_clients_cache):
    for split in ("dirichlet:1.0", "iid"):
        record, _ = execute(ff_config(split, ["n_clients=3"]), torch.device("cpu"),
                            cache_dir=three_clients_cache)
        assert sum(record.extra["synthetic_per_class"]) == 160
        assert record.metrics.variants["local"].selected["accuracy"] is not None


@pytest.mark.slow
def test_a_part_task_and_the_run_hash_the_same_generator(tmp_path):
    """A generator trained as a part task (listed from data on the CPU) is the one the run
    looks for: the cache keys agree (both resize the client's images on the CPU)."""
    from bench.runner import Execution, pending_parts, perform_part

    config = ff_config()
    execution = Execution(out=str(tmp_path))
    parts = pending_parts(config, execution, "cpu")
    assert len(parts) == 10
    perform_part(config, execution, parts[3])
    assert pending_parts(config, execution, "cpu") == parts[:3] + parts[4:]
    record, _ = execute(config, torch.device("cpu"), cache_dir=execution.cache_dir)
    hits = [e for e in record.extra["modules"] if e["cache"] == "hit"]
    assert [f"module/k{e['client']}/c{e['class']}" for e in hits] == [parts[3].name]
    # the part is identified by its content alone; the entry it wrote is keyed by the
    # numerics of the process that trained it, the same as the run's here
    from bench.methods.federatedfactory.cache import ContentCache

    assert ContentCache(execution.cache_dir).has("modules", hits[0]["key"])
    assert hits[0]["key"] != parts[3].key


def test_runs_that_share_a_generator_name_the_same_part(tmp_path):
    """A part is named by its content: a sampler sweep's runs share their generators (one
    task each in the executors, bench/executors.py `_owned`), other training lengths do not."""
    from bench.executors import _owned
    from bench.runner import Execution, pending_parts

    execution = Execution(out=str(tmp_path))
    base = ff_config()
    p = base.method_params
    steps = ff_config(extra=[f"federatedfactory.sampler_steps={p['sampler_steps'] + 2}"])
    longer = ff_config(extra=[f"federatedfactory.gen_images_seen={p['gen_images_seen'] * 2}"])
    parts = {c.run_id: pending_parts(c, execution, "cpu") for c in (base, steps, longer)}
    assert parts[base.run_id] == parts[steps.run_id]
    assert not set(parts[base.run_id]) & set(parts[longer.run_id])
    owned = _owned([base, steps, longer], parts)
    assert len(owned) == 20 and {c.run_id for c, _ in owned} == {base.run_id, longer.run_id}
