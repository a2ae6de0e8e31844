"""W&B: a job started again in its own output folder (a requeued SLURM job) resumes its run."""

from mia import tracking


def test_restarted_job_resumes_its_wandb_run(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg("logger=wandb")
    ids = []
    for out in (tmp_path / "job0", tmp_path / "job0", tmp_path / "job1"):
        out.mkdir(exist_ok=True)
        run = tracking.start(cfg, out)
        try:
            run.log({"step": len(ids)})
            ids.append(run.id)
        finally:
            tracking.finish(run)
    assert ids[0] == ids[1] != ids[2]
    # both starts wrote under the one id (one folder per start, or one if they fell in the same
    # second)
    assert list((tmp_path / "job0" / "wandb").glob(f"offline-run-*-{ids[0]}"))
