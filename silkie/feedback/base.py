"""What every judge takes and returns, so the OpenAI judge and the scene judge are interchangeable.

The interface lives in silkie/grading.py, below the mini world whose scene judge implements it too;
the feedback stage's modules import it from here.
"""

from silkie.grading import Deferred, Item, Judge, Verdict

__all__ = ["Deferred", "Item", "Judge", "Verdict"]
