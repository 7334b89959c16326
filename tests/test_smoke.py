from conftest import run_cli


def test_tiny_run_writes_every_artefact(tiny_run):
    for name in ("config.json", "metrics.csv", "loss.png", "samples.txt", "last.keras", "best.keras", "model.keras"):
        assert (tiny_run / name).is_file(), name


def test_cli_generate_runs(tiny_run):
    r = run_cli("generate", str(tiny_run / "model.keras"), "--prime", "the ", "--length", "30", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("the ")
