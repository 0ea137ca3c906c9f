"""mmr-ablate on run directories written by the test: grouping, mean/std over seeds, outputs, errors."""

import csv
import io
import json
import statistics

import pytest
import yaml

from mmresearch import ablate


def _run(root, name, overrides, metrics, config=None, choices=None, record_in_results=False):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    results = {"metrics": metrics, "config": config or {"temperature": {"init_tau": 0.04}, "seed": 0}}
    if record_in_results:
        results["hydra"] = {"overrides": overrides, "choices": choices or {}}
    else:
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices or {"loss": "infonce"}}}}))
    (run / "results.json").write_text(json.dumps(results))
    return run


@pytest.fixture
def sweeps(tmp_path):
    a, b = tmp_path / "sweep_a", tmp_path / "sweep_b"
    n = 0
    for loss, base in (("infonce", 0.5), ("triplet", 0.3)):
        for seed in (0, 1, 2):
            _run(a, str(n), [f"loss={loss}", f"seed={seed}", "trainer.enable_progress_bar=false"],
                 {"test/t2i_R@1": base + 0.01 * seed, "test/rsum": 2 * base + seed * 0.1, "train/loss": 1.0 - base})
            n += 1
    for seed in (0, 1):  # another sweep: siglip with its temperature; loss given, temperature from the choices
        _run(b, str(seed), ["loss=siglip", "temperature=siglip", f"seed={seed}"], {"test/t2i_R@1": 0.6 + 0.02 * seed, "test/rsum": 1.0, "train/loss": 0.2},
             choices={"loss": "siglip", "temperature": "siglip"}, record_in_results=True)
    return a, b


def test_rows_are_settings_with_mean_std_over_seeds(sweeps):
    assert len(ablate.find_runs([*sweeps, sweeps[0] / "0"])) == 8  # an overlapping path adds no run
    table = ablate.build_table(ablate.find_runs(sweeps), metrics=["test/t2i_R@1", "test/rsum"])
    # loss varies; temperature is siglip in one sweep and (not overridden) learnable... unknown in
    # sweep a, which has no choice for it: shown as the config value or '-'
    assert table.columns[:1] == ["loss"] and "trainer.enable_progress_bar" not in table.columns
    rows = {setting[0]: (stats, seeds) for setting, stats, seeds in table.rows}
    mean, std, n = rows["infonce"][0]["test/t2i_R@1"]
    assert n == 3 and mean == pytest.approx(0.51) and std == pytest.approx(statistics.stdev([0.5, 0.51, 0.52]))
    assert rows["siglip"][0]["test/t2i_R@1"][2] == 2 and sorted(rows["siglip"][1]) == ["0", "1"]


def test_markdown_csv_latex_and_plot(sweeps, tmp_path, capsys):
    prefix = tmp_path / "out" / "table"
    code = ablate.main([str(p) for p in sweeps] + ["--metrics", "test/t2i_R@1", "train/loss", "--plot", "test/t2i_R@1", "--x", "loss",
                                                  "--out", str(prefix)])
    assert code == 0
    md = prefix.with_suffix(".md").read_text()
    assert "| loss |" in md and "seeds" in md and "**0.610 ± 0.014**" in md  # best t2i in bold
    assert "**0.200 ± 0.000**" in md  # loss: lower is better
    rows = list(csv.DictReader(io.StringIO(prefix.with_suffix(".csv").read_text())))
    assert {r["loss"] for r in rows} == {"infonce", "siglip", "triplet"} and rows[0]["n_seeds"] in {"2", "3"}
    assert float(next(r for r in rows if r["loss"] == "triplet")["test/t2i_R@1_mean"]) == pytest.approx(0.31)
    tex = prefix.with_suffix(".tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and r"test/t2i\_R@1" in tex and "$\\pm$" in tex
    assert prefix.with_suffix(".png").stat().st_size > 1000
    assert "8 runs, 3 settings" in capsys.readouterr().out


def test_merge_makes_one_column_of_synonymous_keys(tmp_path):
    for i, (key, tau) in enumerate([("temperature.tau", 0.02), ("temperature.tau", 0.07), ("temperature.init_tau", 0.02)]):
        for seed in (0, 1):
            _run(tmp_path / "s", f"{i}_{seed}", [f"{key}={tau}", f"seed={seed}", f"temperature={'fixed' if 'init' not in key else 'learnable'}"],
                 {"test/rsum": tau + seed})
    table = ablate.build_table(ablate.find_runs([tmp_path / "s"]), merge={"tau0": ["temperature.tau", "temperature.init_tau"]})
    assert table.columns == ["tau0", "temperature"]
    assert [s for s, _, _ in table.rows] == [("0.02", "fixed"), ("0.02", "learnable"), ("0.07", "fixed")]


def test_errors_name_the_problem(tmp_path, sweeps):
    with pytest.raises(ablate.AblationError, match="no results.json"):
        ablate.find_runs([tmp_path / "sweep_a" / "0" / ".hydra"])
    with pytest.raises(ablate.AblationError, match="no such directory"):
        ablate.find_runs([tmp_path / "nope"])
    with pytest.raises(ablate.AblationError, match="'test/nope' is missing"):
        ablate.build_table(ablate.find_runs(sweeps), metrics=["test/nope"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    with pytest.raises(ablate.AblationError, match="bad/results.json"):
        ablate.find_runs([tmp_path / "bad"])
    with pytest.raises(SystemExit) as exit_info:
        ablate.main([str(tmp_path / "nope")])
    assert exit_info.value.code == 2


def _visible_line(line) -> bool:
    return line.get_linestyle() not in ("None", "none", "", " ") and len(line.get_xdata()) > 1


def test_a_categorical_x_is_drawn_as_points_with_error_bars_not_a_line(sweeps):
    """Loss names on x: no line joins two categories; each setting is a point with its error bar
    at its category (series side by side), the ticks name the categories."""
    from matplotlib.container import ErrorbarContainer

    table = ablate.build_table(ablate.find_runs(sweeps), metrics=["test/t2i_R@1"])
    fig = ablate.figure(table, "test/t2i_R@1", "loss")
    ax = fig.axes[0]
    categories = [t.get_text() for t in ax.get_xticklabels()]
    assert categories == ["infonce", "siglip", "triplet"]
    joined = [line for line in ax.lines if _visible_line(line) and len({round(float(x)) for x in line.get_xdata()}) > 1]
    assert not joined, [list(line.get_xdata()) for line in joined]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2 and all(c.has_yerr for c in bars)  # the temperature=- and temperature=siglip series
    points = {}
    for c in bars:
        for x, y in zip(*c.lines[0].get_data()):
            points[categories[round(float(x))]] = (float(x), float(y))
    assert {k: v[1] for k, v in points.items()} == pytest.approx({"infonce": 0.51, "siglip": 0.61, "triplet": 0.31})
    assert all(abs(x - round(x)) < 0.5 for x, _ in points.values())


def test_a_numeric_x_is_still_a_line(tmp_path):
    for i, (key, tau) in enumerate([("temperature.tau", 0.02), ("temperature.tau", 0.07), ("temperature.init_tau", 0.02)]):
        for seed in (0, 1):
            _run(tmp_path / "s", f"{i}_{seed}", [f"{key}={tau}", f"seed={seed}", f"temperature={'fixed' if 'init' not in key else 'learnable'}"],
                 {"test/rsum": tau + seed})
    table = ablate.build_table(ablate.find_runs([tmp_path / "s"]), merge={"tau0": ["temperature.tau", "temperature.init_tau"]})
    ax = ablate.figure(table, "test/rsum", "tau0").axes[0]
    lines = [line for line in ax.lines if _visible_line(line)]
    assert [list(map(float, line.get_xdata())) for line in lines] == [[0.02, 0.07]]  # the fixed series, joined in x order
