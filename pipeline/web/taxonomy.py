"""The arXiv categories the subscribe and manage pages offer (a picker, not free text).

A short list of the categories Paperpost's readers ask for (cs, stat, math, physics and
neighbours), with arXiv's own names. A reader's config entry may name any category; the
pages offer these, and refuse a code that is not here, so nothing the form echoes back is
free text.
"""

from __future__ import annotations

from typing import Final

CATEGORIES: Final[tuple[tuple[str, str], ...]] = (
    ("cs.AI", "Artificial Intelligence"),
    ("cs.CL", "Computation and Language"),
    ("cs.CR", "Cryptography and Security"),
    ("cs.CV", "Computer Vision and Pattern Recognition"),
    ("cs.CY", "Computers and Society"),
    ("cs.DB", "Databases"),
    ("cs.DC", "Distributed, Parallel, and Cluster Computing"),
    ("cs.DS", "Data Structures and Algorithms"),
    ("cs.GT", "Computer Science and Game Theory"),
    ("cs.HC", "Human-Computer Interaction"),
    ("cs.IR", "Information Retrieval"),
    ("cs.IT", "Information Theory"),
    ("cs.LG", "Machine Learning"),
    ("cs.LO", "Logic in Computer Science"),
    ("cs.MA", "Multiagent Systems"),
    ("cs.NE", "Neural and Evolutionary Computing"),
    ("cs.NI", "Networking and Internet Architecture"),
    ("cs.PL", "Programming Languages"),
    ("cs.RO", "Robotics"),
    ("cs.SD", "Sound"),
    ("cs.SE", "Software Engineering"),
    ("cs.SI", "Social and Information Networks"),
    ("eess.AS", "Audio and Speech Processing"),
    ("eess.IV", "Image and Video Processing"),
    ("eess.SP", "Signal Processing"),
    ("stat.ML", "Machine Learning (Statistics)"),
    ("stat.ME", "Methodology"),
    ("stat.TH", "Statistics Theory"),
    ("stat.AP", "Applications"),
    ("stat.CO", "Computation"),
    ("math.OC", "Optimization and Control"),
    ("math.PR", "Probability"),
    ("math.ST", "Statistics Theory (Mathematics)"),
    ("math.NA", "Numerical Analysis"),
    ("math.CO", "Combinatorics"),
    ("q-bio.NC", "Neurons and Cognition"),
    ("q-bio.QM", "Quantitative Methods"),
    ("q-fin.CP", "Computational Finance"),
    ("econ.EM", "Econometrics"),
    ("physics.comp-ph", "Computational Physics"),
    ("physics.data-an", "Data Analysis, Statistics and Probability"),
    ("cond-mat.dis-nn", "Disordered Systems and Neural Networks"),
    ("quant-ph", "Quantum Physics"),
    ("astro-ph.IM", "Instrumentation and Methods for Astrophysics"),
)

CODES: Final[frozenset[str]] = frozenset(code for code, _ in CATEGORIES)
