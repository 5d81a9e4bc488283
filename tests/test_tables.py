"""eval.tables: the Table 3-5 layout from finished attack-suite JSON (contract 7), and the paper's numbers."""
import json

from eval import tables


def _run(path, preset, members, natural, attacks):
    (path / "eval").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"method": "cce", "preset": preset, "members": members}))
    entries = {n: {"robust_accuracy": acc, "params": {"eps": 0.1, "eps_iter": 0.01, "nb_iter": k},
                   "n_samples": n_s, "seconds": 1.0} for n, (acc, k, n_s) in attacks.items()}
    entries["autoattack"] = {"skipped": "torch missing: pip install -r requirements-autoattack.txt"}
    (path / "eval" / "attack_suite.json").write_text(json.dumps(
        {"run_dir": str(path), "dataset": "fashion_mnist", "seed": 0, "natural_accuracy": natural,
         "n_test": 10000, "attacks": entries, "sanity": {"warnings": []}}))
    return str(path)


def test_table_columns_rows_and_samples(tmp_path, capsys):
    a = _run(tmp_path / "a", "cce-rm", 2, 0.7519, {"pgd": (0.6234, 100, 1000), "mul_pgd": (0.5, 20, 1000)})
    b = _run(tmp_path / "b", None, 3, 0.75, {"pgd": (0.61, 100, 1000)})
    assert tables.main(["tables", "--run_dir", a, "--run_dir", b, "--paper", "table4"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "| Attack | CCE-RM_2 | CCE_3 |"
    assert "| Non-att (Nat. acc.) | 75.2 | 75.0 |" in lines
    assert "| PGD k = 100 | 62.3 | 61.0 |" in lines
    assert "| mul-PGD k = 20 | 50.0 | n/a |" in lines
    assert "| Auto-Attack | skipped | skipped |" in lines
    assert "CCE-RM_2: 1000 samples: pgd, mul_pgd" in lines
    assert "| PGD k = 100 | 38.0 | 39.7 | 42.2 | 44.7 | 40.8 | 43.9 | 46.8 |" in lines  # the paper's Table 4


def test_missing_results_exit_2(tmp_path, capsys):
    assert tables.main(["tables", "--run_dir", str(tmp_path)]) == 2
    assert "eval.attack_suite" in capsys.readouterr().err
