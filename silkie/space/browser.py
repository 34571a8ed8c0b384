"""The Space's second tab: a VLFeedback dataset, indexed once, filtered and shown row by row.

`spaces/app.py` draws the tab; this module indexes the `default` config (ratings and pair margins,
no images) so filters answer without touching the images.
"""

from __future__ import annotations

from silkie import one_line
from silkie.schema import ASPECTS
from silkie.space.config import reachable
from silkie.space.judging import cell

__all__ = ["Browser", "open_dataset"]


class Browser:
    """The `default` config of a VLFeedback dataset, indexed once (ratings and margins, no images)."""

    def __init__(self, dataset: str):
        import numpy as np
        from datasets import load_dataset

        from silkie.pairs import row_from_completions

        self.rows = load_dataset(dataset, "default", split="train")
        self.sources, self.models, self.ratings, self.margins = [], [], [], []
        wanted = [name for name in ("id", "source", "completions") if name in self.rows.column_names]
        for row in self.rows.select_columns(wanted):  # a release without `source` or `image` is browsable too
            columns = row["completions"]
            completions = [dict(zip(columns, values)) for values in zip(*columns.values())]
            scored = row_from_completions(row["id"], completions).ratings  # (responses, aspects), NaN if unusable
            scores = scored.mean(axis=1)
            scores = scores[~np.isnan(scores)]
            self.sources.append(row.get("source") or "unknown")
            self.models.append(columns["model"])
            self.ratings.append(scored)
            self.margins.append(float(scores.max() - scores.min()) if len(scores) > 1 else 0.0)

    def choices(self) -> tuple[list[str], list[str]]:
        """The sources and the models found, for the filters."""
        return sorted(set(self.sources)), sorted({m for models in self.models for m in models})

    def filter(self, source=None, model=None, aspect=None, low=1, high=5, margin=0.0) -> list[int]:
        """Rows from `source` with a response from `model`, whose (that model's, else any) `aspect`
        rating lies in [low, high], and whose best and worst mean ratings differ by `margin` or more."""
        import numpy as np

        matches = []
        for i, (row_source, models) in enumerate(zip(self.sources, self.models)):
            if (source and row_source != source) or (model and model not in models) or self.margins[i] < margin:
                continue
            if aspect:
                column = self.ratings[i][:, ASPECTS.index(aspect)]
                if model:
                    column = column[models.index(model):models.index(model) + 1]
                if not np.any((column >= low) & (column <= high)):
                    continue
            matches.append(i)
        return matches

    def show(self, index: int) -> tuple[object, str]:
        """A row's image, and markdown of its prompt and its responses with their ratings."""
        row = self.rows[index]
        columns = row["completions"]
        lines = [f"**{row['prompt']}**", "", f"`{row['id']}` · source `{self.sources[index]}` · "
                 f"margin {self.margins[index]:.2f}"]
        for j, (model, response, rated) in enumerate(zip(columns["model"], columns["response"],
                                                         columns["annotations"]), start=1):
            lines += ["", f"#### {j}. {model}", "", "> " + " ".join(response.split()), "",
                      "| aspect | rating | rationale |", "|---|---|---|"]
            lines += [f"| {a} | {cell(rated[a]['Rating'])} | {cell(rated[a]['Rationale'])} |" for a in ASPECTS]
        return row.get("image"), "\n".join(lines)


def open_dataset(dataset: str | None) -> tuple[Browser | None, str]:
    """(the browser, "") or (None, why the tab is empty)."""
    if not dataset:
        return None, "No dataset configured: set SILKIE_DATASET to a VLFeedback folder or Hub id."
    if not reachable(dataset):
        return None, (f"No VLFeedback dataset at {dataset} yet: run `silkie run` first, or point SILKIE_DATASET "
                      "at one (a folder, or a Hub id such as MMInstruction/VLFeedback).")
    try:
        return Browser(dataset), ""
    except Exception as error:  # noqa: BLE001 - the other tab still works
        return None, f"The dataset {dataset} cannot be read: {one_line(error)[:300]}"
