"""The privacy-utility table and plot of a sweep report, from report rows."""

from mia.report import privacy_utility as pu


def _row(defense="none", wd=0.1, epochs=40, auc=0.9, tpr=0.3, r1=0.2, eps=None):
    row = {
        "defense": defense,
        "weight_decay": wd,
        "epochs": epochs,
        "utility/i2t_r1": r1,
        "utility/t2i_r1": r1,
        "utility/chance_r1": 0.002,
        "utility/pool_size": 500,
        "utility/colour_chance": 1 / 12,
        "utility/shape_chance": 1 / 6,
        "csa/auc": auc,
        "csa/tpr_at_fpr_1e-2": tpr,
    }
    if eps is not None:
        row.update({"privacy/epsilon": eps, "privacy/delta": 1e-5})
    return row


def test_applies_only_to_sweeps_that_compare_defenses():
    assert not pu.applies([_row(), _row(epochs=10)])  # an epoch sweep alone is not one
    assert pu.applies([_row(), _row(wd=1.0)])
    assert pu.applies([_row(), _row("dp_sgd(noise_multiplier=1)")])


def test_reference_is_the_least_regularised_undefended_job():
    rows = [
        _row(wd=1.0, auc=0.8),
        _row(epochs=10, auc=0.7),
        _row(auc=0.95),
        _row("augment_text(word_dropout=0.2)"),
    ]
    assert pu.reference(rows) is rows[2]


def test_table_states_chance_epsilon_and_the_difference_from_the_reference():
    rows = [_row("dp_sgd(noise_multiplier=1)", auc=0.5, r1=0.004, eps=18.5), _row(auc=0.98, r1=0.2)]
    lines = pu.table(rows, ["csa"])
    text = "\n".join(lines)
    assert "Recall@1 chance: 0.0020 (pool of 500)" in text
    ref_line = next(line for line in lines if "(reference)" in line)
    dp_line = next(line for line in lines if line.startswith("| dp_sgd"))
    assert "0.980" in ref_line and "(-0.480)" in dp_line and "18.5 (1e-05)" in dp_line
    assert lines.index(ref_line) < lines.index(dp_line)  # the reference comes first


def test_plot_is_written(tmp_path):
    rows = [
        _row(),
        _row("embedding_noise(std=0.1)", auc=0.8, r1=0.1),
        _row(wd=3.0, auc=0.9, r1=0.15),
    ]
    path = pu.plot(rows, ["csa"], tmp_path / "pu.png")
    assert path.stat().st_size > 10_000
