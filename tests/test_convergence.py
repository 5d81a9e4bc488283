"""studies.convergence: the budget verdict and the attack's k, on hand-made measurements."""
import pytest

from cce_tf.cli_flags import UsageError
from studies import convergence


def test_budgets_parse_and_bad_ones_are_refused():
    assert convergence.parse_budget("10000x5") == convergence.Budget(10000, 5)
    assert convergence.parse_budget("2000x3x5").name == "2000x3x5"
    for bad in ("10000", "10000x0", "axb", "1x2x3x4"):
        with pytest.raises(UsageError):
            convergence.parse_budget(bad)


def test_a_budget_without_augmentation_trains_without_it_in_a_folder_of_its_own():
    budget = convergence.parse_budget("10000x5x5", augment=False)
    assert budget.name == "10000x5x5-noaug"
    assert convergence.scale_of(budget, 20, 500).train_options("fashion_mnist")["augment"] is False
    # The paper's augmentation is a training default, not an option: the other scales' job markers stay.
    assert "augment" not in convergence.scale_of(convergence.parse_budget("10000x5"), 20, 500).train_options("x")


def _measured(change_natural, change_pgd):
    b5 = {"ADV-EN_2": {"natural": 80.0, "pgd": 60.0}, "CCE-RM_2": {"natural": 81.0, "pgd": 62.0}}
    b10 = {"ADV-EN_2": {"natural": 80.5, "pgd": 60.5},
           "CCE-RM_2": {"natural": 81.0 + change_natural, "pgd": 62.0 + change_pgd}}
    return {"10000x5": b5, "10000x10": b10}


def test_a_budget_passes_only_when_doubling_the_epochs_moves_every_method_less_than_the_tolerance():
    budgets = [convergence.Budget(10000, 5), convergence.Budget(10000, 10)]
    labels = ["ADV-EN_2", "CCE-RM_2"]
    assert "**passes**" in convergence.table(_measured(1.0, -1.4), budgets, labels)
    assert "**does not pass**" in convergence.table(_measured(0.2, 2.0), budgets, labels)
    missing = _measured(0, 0)
    del missing["10000x10"]["CCE-RM_2"]
    assert "**not measured yet**" in convergence.table(missing, budgets, labels)


def test_the_smallest_k_from_which_every_doubling_moves_every_model_less_than_a_point():
    measured = {"NAT_2": {5: 20.0, 10: 8.0, 20: 7.5, 40: 7.4}, "CCE-RM_2": {5: 70.0, 10: 66.0, 20: 64.0, 40: 63.5}}
    assert "every doubling moves every model by less than 1 point: **20**" in \
        convergence.k_table(measured, [5, 10, 20, 40])
    assert "no k listed passes" in convergence.k_table(measured, [5, 10])
    # 10 -> 20 passes by luck, 20 -> 40 does not: k = 40 is the first from which every doubling passes.
    lucky = {"NAT_2": {10: 19.6, 20: 19.2, 40: 18.2, 80: 17.8}}
    assert "**40**" in convergence.k_table(lucky, [10, 20, 40, 80])


def test_the_dry_run_plans_every_budget_and_prints_the_empty_table(tmp_path, capsys):
    assert convergence.cli(["convergence", "--budgets", "2000x1,2000x2", "--methods", "nat,cce-rm",
                            "--out_dir", str(tmp_path), "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert out.count("train               2 jobs: 0 done, 2 to do") == 2
    assert "| CCE-RM_2 | – | – |" in out and "2000x1 → 2000x2" in out and "**not measured yet**" in out
    assert convergence.cli(["convergence", "--attack_k", "ten", "--dry_run"]) == 2
