"""Paper-scale runs across machines (aevb/paper_scale.py): an unfinished run parked in the repository goes
on in a fresh clone to the numbers of an uninterrupted run, its segments (machine, commit, samples, hours)
end in the published provenance, and a checkpoint of other training code is never resumed."""
import json
import shutil
import subprocess

import pytest
import torch

from aevb import grid, paper_scale, runs
from aevb.experiment import RunConfig, train_run

NAME = "mnist/aevb_z20_kingma_s1"  # a run of Figure 2, at a tiny budget
SAMPLES, EVERY = 3000, 1000


def tiny_config():
    return RunConfig(**dict(grid.run(NAME).params("smoke"), samples=SAMPLES, checkpoint_every=EVERY,
                            train_size=1000, hidden=[50], lr_choices=[0.02], eval_points=3,
                            is_points=20, is_k=10, refit_samples=0, appd_points=0))


def train(run_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_run(tiny_config(), run_dir, progress="none")
    finally:
        torch.set_num_threads(threads)


class Killed(Exception):
    pass


def train_until_first_checkpoint(run_dir, monkeypatch):
    """Train until the first checkpoint is written, then stop as a killed process would."""
    save = runs.Checkpoint.save

    def save_then_die(self, *args):
        save(self, *args)
        raise Killed
    with monkeypatch.context() as m:
        m.setattr(runs.Checkpoint, "save", save_then_die)
        with pytest.raises(Killed):
            train(run_dir)
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.slow
def test_a_parked_run_goes_on_in_a_fresh_clone_to_the_uninterrupted_numbers(tmp_path, monkeypatch):
    reference = train(tmp_path / "reference" / NAME)

    first, second = tmp_path / "machine-a" / "runs", tmp_path / "machine-b" / "runs"
    parked, published = tmp_path / "repo" / "unfinished", tmp_path / "repo" / "paper-scale"
    monkeypatch.setattr(paper_scale, "cpu_model", lambda: "CPU A")
    train_until_first_checkpoint(first / NAME, monkeypatch)
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        paper_scale.park(first, NAME + "_other", parked)
    folder, progress = paper_scale.park(first, NAME, parked)
    [checkpoint] = (first / NAME).glob("checkpoint-*.pt")
    assert sorted(f.name for f in folder.iterdir()) == sorted([checkpoint.name, "progress.json"])
    assert progress["samples_seen"] == EVERY and progress["code_hash"] == runs.code_hash()
    assert progress["samples_per_second"] is None  # no interval of 10^6 samples in so tiny a run
    [segment] = progress["segments"]
    assert (segment["machine"], segment["samples_from"], segment["samples_to"]) == ("CPU A", 0, EVERY)
    # parking again on the same machine at the same place changes nothing
    assert paper_scale.park(first, NAME, parked)[1]["segments"] == progress["segments"]
    assert "this checkout goes on from it" in paper_scale.status(parked)[0]

    # a fresh clone on another machine: the runs folder is gone, the parked checkpoint is in the repository
    shutil.rmtree(first)
    monkeypatch.setattr(paper_scale, "cpu_model", lambda: "CPU B")
    done = paper_scale.restore(second, parked=parked)
    assert done == {NAME: f"restored at {EVERY:,} samples into {second / NAME}"}
    assert "not restored" in paper_scale.restore(second, parked=parked)[NAME]  # already there
    resumed = train(second / NAME)
    assert len(resumed["history"]) == len(reference["history"])
    for key in ("train_elbo", "test_elbo", "test_recon", "test_kl", "test_log_px_is", "samples"):
        assert resumed["metrics"][key] == reference["metrics"][key], key
    with pytest.raises(ValueError, match="is finished: publish it"):
        paper_scale.park(second, NAME, parked)

    target = paper_scale.publish(second, NAME, published)  # its parked runs: the folder beside it
    record = json.loads((target / "provenance.json").read_text())
    assert record["machine"] == "CPU A; CPU B"
    assert [(s["machine"], s["samples_from"], s["samples_to"]) for s in record["segments"]] == \
        [("CPU A", 0, EVERY), ("CPU B", EVERY, SAMPLES)]
    assert sum(s["hours"] for s in record["segments"]) == pytest.approx(record["training_hours"], abs=0.02)
    assert list(parked.iterdir()) == []  # the parked checkpoint went with the publication
    assert paper_scale.status(parked) == []


def test_a_parked_checkpoint_of_other_training_code_is_not_restored(tmp_path, monkeypatch):
    train_until_first_checkpoint(tmp_path / "runs" / NAME, monkeypatch)
    parked = tmp_path / "unfinished"
    folder, progress = paper_scale.park(tmp_path / "runs", NAME, parked)
    (folder / "progress.json").write_text(json.dumps({**progress, "code_hash": "0123456789ab"}))
    done = paper_scale.restore(tmp_path / "elsewhere", parked=parked)
    assert done[NAME].startswith("not restored: parked by training code 0123456789ab")
    assert not (tmp_path / "elsewhere").exists()
    assert "made by training code 0123456789ab" in paper_scale.status(parked)[0]
    monkeypatch.setattr(paper_scale, "UNFINISHED", parked)
    with pytest.raises(SystemExit) as exit_:  # the command says so, and fails
        paper_scale.main(["restore", str(tmp_path / "elsewhere")])
    assert exit_.value.code == 1
    with pytest.raises(FileNotFoundError, match="nothing parked"):
        paper_scale.restore(tmp_path / "elsewhere", ["mnist/unknown"], parked=parked)
    # the run finished here by this code: the checkpoint parked by other code is not its past
    train(tmp_path / "runs" / NAME)
    target = paper_scale.publish(tmp_path / "runs", NAME, tmp_path / "published", parked=parked)
    record = json.loads((target / "provenance.json").read_text())
    assert "segments" not in record and record["code_hash"] == runs.code_hash()
    assert (folder / "progress.json").exists()  # left where it is


def test_restore_names_the_newest_commit_with_the_parked_training_code(tmp_path):
    def commit(path, text, message):
        (tmp_path / path).write_text(text)
        subprocess.run(["git", "-C", str(tmp_path), "add", path], check=True)
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t",
                        "commit", "-qm", message], check=True)
        return paper_scale.git(tmp_path, "rev-parse", "HEAD")

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    parked = commit("train.py", "x = 1\n", "the code that parked the run")
    tools = commit("tools.py", "y = 2\n", "newer tools, the same training code")
    assert paper_scale.newest_commit_with_code(parked, tmp_path, ["train.py"]) == tools
    other = commit("train.py", "x = 2\n", "other training code")
    head = commit("tools.py", "y = 3\n", "newer tools again")
    assert paper_scale.newest_commit_with_code(parked, tmp_path, ["train.py"]) == tools
    assert paper_scale.newest_commit_with_code(other, tmp_path, ["train.py"]) == head
    assert paper_scale.newest_commit_with_code("0" * 40, tmp_path, ["train.py"]) is None
    assert paper_scale.newest_commit_with_code(None, tmp_path, ["train.py"]) is None
    assert paper_scale.newest_commit_with_code(parked, tmp_path / "nowhere", ["train.py"]) is None


def test_a_parked_run_further_on_is_never_replaced_by_one_behind():
    a = {"machine": "A", "cpus": 2, "commit": "c1", "clean": True}
    segments = paper_scale.joined([], {**a, "samples_from": 0, "samples_to": 5, "hours": 1.0})
    # going on from there on the same machine and commit: one segment
    same = paper_scale.joined(segments, {**a, "samples_from": 5, "samples_to": 9, "hours": 0.5})
    assert same == [{**a, "samples_from": 0, "samples_to": 9, "hours": 1.5}]
    # another commit: a segment of its own
    other = paper_scale.joined(same, {**a, "commit": "c2", "samples_from": 9, "samples_to": 12, "hours": 0.4})
    assert [s["commit"] for s in other] == ["c1", "c2"]
    assert paper_scale.joined(other, {**a, "commit": "c3", "samples_from": 12, "samples_to": 12,
                                      "hours": 0.0}) == other  # nothing trained: no segment


def test_park_refuses_to_replace_a_checkpoint_further_on(tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / NAME
    train_until_first_checkpoint(run_dir, monkeypatch)
    parked = tmp_path / "unfinished"
    folder, progress = paper_scale.park(tmp_path / "runs", NAME, parked)
    (folder / "progress.json").write_text(json.dumps({**progress, "samples_seen": 10 * EVERY}))
    with pytest.raises(ValueError, match="further than"):
        paper_scale.park(tmp_path / "runs", NAME, parked)


def test_the_steady_rate_leaves_a_pause_out_and_status_reads_it(tmp_path):
    """A run at 10,000 samples/s, stopped for half an hour once: its steady rate is 10,000, where samples over
    wall time say less; status plans with it, and says which rate it used where a progress.json has none."""
    rows, wall = [{"samples": 0, "wall_time": 0.0}], 0.0
    for samples in (10_000, 30_000, 100_000):  # the early rows: short intervals, mostly evaluation
        wall += 5.0
        rows.append({"samples": samples, "wall_time": wall})
    for i in range(1, 10):  # then 2 x 10^6 samples a row, at 10,000 samples/s
        wall += 200.0 + (1800.0 if i == 4 else 0.0)
        rows.append({"samples": 100_000 + i * 2_000_000, "wall_time": wall})
    assert paper_scale.steady_rate(rows) == pytest.approx(10_000)
    assert rows[-1]["samples"] / rows[-1]["wall_time"] < 8_000  # the pause, counted in full
    assert paper_scale.steady_rate(rows[:4]) is None  # no interval of 10^6 samples
    two = [{"samples": 0, "wall_time": 0.0}, {"samples": 10**6, "wall_time": 100.0}, {"samples": 2 * 10**6,
                                                                                  "wall_time": 300.0}]
    assert paper_scale.steady_rate(two) == pytest.approx(7_500)  # an even count: the mean of the middle two

    # a finished run's history.csv, as save_run writes it: the same rate
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lines = ["samples,epoch,running_elbo,wall_time"] + [f"{r['samples']},0,-100,{r['wall_time']}" for r in rows]
    (run_dir / "history.csv").write_text("\n".join(lines) + "\n")
    (run_dir / "config.json").write_text("{}")
    (run_dir / "metrics.json").write_text("{}")
    assert paper_scale.steady_rate(runs.load_summary(run_dir)["history"]) == pytest.approx(10_000)
    assert paper_scale.steady_rate([{k: v for k, v in r.items() if k != "wall_time"} for r in rows]) is None

    parked = tmp_path / "unfinished"
    folder = parked / NAME
    folder.mkdir(parents=True)
    progress = {"run": NAME, "checkpoint": "checkpoint-0.pt", "code_hash": runs.code_hash(), "samples": 10**8,
                "samples_seen": 2 * 10**7, "training_hours": 1.0, "samples_per_second": 10_000,
                "segments": [{"machine": "CPU A", "cpus": 2, "commit": "c1", "clean": True, "samples_from": 0,
                              "samples_to": 2 * 10**7, "hours": 1.0}]}
    (folder / "progress.json").write_text(json.dumps(progress))
    [line] = paper_scale.status(parked)
    assert "about 2.2 h left at its steady rate (10,000 samples/s)" in line, line
    (folder / "progress.json").write_text(json.dumps({**progress, "samples_per_second": None}))
    [line] = paper_scale.status(parked)  # parked before the steady rate was recorded: samples over hours
    assert "about 4.0 h left at its rate so far (5,556 samples/s)" in line, line
