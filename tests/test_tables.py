"""eval.tables: the Table 3-5 layout from finished attack-suite JSON (contract 7). The paper's numbers
live in studies/specs/ (tests/test_study_specs.py)."""
import json
import os

from eval import reuse, tables


def _run(path, preset, members, natural, attacks, any_attack=None):
    (path / "eval").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(
        {"dataset": "fashion_mnist", "arch": "cnn", "method": "cce", "preset": preset, "members": members,
         "input_shape": [28, 28, 1], "num_classes": 10}))
    (path / "ensemble.weights.h5").write_bytes(os.urandom(64))  # only its fingerprint is read
    fp = reuse.fingerprint(str(path))
    entries = {n: {"robust_accuracy": acc, "params": {"eps": 0.1, "eps_iter": 0.01, "nb_iter": k},
                   "n_samples": n_s, "seconds": 1.0, "weights_sha256": fp}
               for n, (acc, k, n_s) in attacks.items()}
    entries["autoattack"] = {"skipped": "torch missing: pip install -r requirements-autoattack.txt"}
    (path / "eval" / "attack_suite.json").write_text(json.dumps(
        {"run_dir": str(path), "dataset": "fashion_mnist", "seed": 0, "natural_accuracy": natural,
         "n_test": 10000, "attacks": entries, "sanity": {"warnings": []}, "weights_sha256": fp,
         **({"any_attack": any_attack} if any_attack else {})}))
    return str(path)


def test_table_columns_rows_and_samples(tmp_path, capsys):
    a = _run(tmp_path / "a", "cce-rm", 2, 0.7519, {"pgd": (0.6234, 100, 1000), "mul_pgd": (0.5, 20, 1000)},
             any_attack={"robust_accuracy": 0.481, "n_samples": 1000, "attacks": ["pgd", "mul_pgd"]})
    b = _run(tmp_path / "b", None, 3, 0.75, {"pgd": (0.61, 100, 1000)})
    assert tables.cli(["tables", "--run_dir", a, "--run_dir", b]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "| Attack | CCE-RM_2 | CCE_3 |"
    assert "| Non-att (Nat. acc.) | 75.2 [74.3, 76.0] | 75.0 [74.1, 75.8] |" in lines  # Wilson, n = 10000
    assert "| PGD k = 100 | 62.3 [59.3, 65.3] | 61.0 [57.9, 64.0] |" in lines           # n = 1000
    assert "| mul-PGD k = 20 | 50.0 [46.9, 53.1] | n/a |" in lines
    assert "| Auto-Attack | skipped | skipped |" in lines
    assert "| **Any attack (per-sample worst case)** | 48.1 [45.0, 51.2] (n = 1000) | n/a |" in lines
    assert "CCE-RM_2: 1000 samples: pgd, mul_pgd" in lines
    assert "paper" not in out.lower()


def test_no_paper_flag(tmp_path, capsys):
    """The paper's numbers live in studies/specs/ (python -m studies.reproduce --study table4)."""
    a = _run(tmp_path / "a", "cce-rm", 2, 0.75, {"pgd": (0.6, 100, 1000)})
    assert tables.cli(["tables", "--run_dir", a, "--paper", "table4"]) == 2
    assert not hasattr(tables, "PAPER")


def test_missing_results_exit_2(tmp_path, capsys):
    assert tables.cli(["tables", "--run_dir", str(tmp_path)]) == 2
    assert "config.json is missing" in capsys.readouterr().err
    a = _run(tmp_path / "a", "cce-rm", 2, 0.75, {})
    os.remove(os.path.join(a, "eval", "attack_suite.json"))
    assert tables.cli(["tables", "--run_dir", a]) == 2
    assert "eval.attack_suite" in capsys.readouterr().err


def test_results_of_other_weights_are_never_tabled(tmp_path, capsys):
    a = _run(tmp_path / "a", "cce-rm", 2, 0.75, {"pgd": (0.6, 100, 1000)})
    (tmp_path / "a" / "ensemble.weights.h5").write_bytes(os.urandom(64))  # trained further
    assert tables.cli(["tables", "--run_dir", a]) == 2
    assert "computed on other weights" in capsys.readouterr().err


def test_an_entry_of_other_weights_is_left_out(tmp_path, capsys):
    a = _run(tmp_path / "a", "cce-rm", 2, 0.75, {"pgd": (0.6, 100, 1000), "mim": (0.55, 100, 1000)})
    path = tmp_path / "a" / "eval" / "attack_suite.json"
    r = json.loads(path.read_text())
    r["attacks"]["mim"]["weights_sha256"] = "0" * 64
    path.write_text(json.dumps(r))
    assert tables.cli(["tables", "--run_dir", a]) == 0
    out = capsys.readouterr().out
    assert "| PGD k = 100 | 60.0 [56.9, 63.0] |" in out and "MIM" not in out
