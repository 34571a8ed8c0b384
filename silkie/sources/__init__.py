"""Instruction sources and the collect sampler: stage 1 of the loop (`silkie collect`).

One small module per source reads that dataset's public release as it is downloaded (each
module's docstring gives the layout) and yields instructions in the contract of
`silkie.schema.check_instruction`: {"id", "source", "prompt", "image", "meta"}, with the image
stored by content in `images/` beside the output. `sampler.collect` mixes them by quota.

One instruction per conversation: the first human turn. VLFeedback rates single-turn
instructions, and the first turn is the one that introduces the image; later turns lean on
answers the pool's models never gave, so they would not stand alone. `meta["human_turns"]`
records how many turns the conversation had.

The `<image>` marker is removed from prompts: each model's chat template places the image itself.
"""

from silkie.sources.sampler import PAPER_QUOTAS, CollectConfig, CollectSummary, SourceStats, collect, plan_quotas, run
from silkie.sources.specs import SOURCES, parse_quota, parse_source

__all__ = ["PAPER_QUOTAS", "SOURCES", "CollectConfig", "CollectSummary", "SourceStats", "collect", "parse_quota",
           "parse_source", "plan_quotas", "run"]
