"""The embedded offline task: a small grammar of short English reviews of mixed sentiment.

It stands in for a real corpus so that the default experiment runs with no downloads. A review
opens with a neutral phrase ("the pasta was", "i bought this blender and") and its continuation
decides the sentiment, so a model pretrained on the corpus starts near a mean VADER score of 0
and PPO has a lot of room to push it positive:

    the pasta was bland and cold . the service was slow . avoid this place .
    i bought this phone and it works perfectly . the battery is excellent .

Every choice goes through a `random.Random(seed)`, so a seed fixes the corpus exactly. The
words (adjective pools, domains, openings, stock clauses) are in `reviews.yaml` beside
this module; the code here is the grammar.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from importlib import resources

import yaml

POS, NEG = 1, -1
VOCABULARY = "reviews.yaml"  # beside this module: adjectives, domains, leads, events, closers


@dataclass(frozen=True)
class Part:
    """Something a review describes with an adjective: `np` `copula` <adjective from `kind`>."""

    np: str
    kind: str
    plural: bool = False


@dataclass(frozen=True)
class Domain:
    """One kind of review: what is reviewed, the neutral openings, and what can follow them."""

    tense: str  # "past" (a meal, a stay) or "present" (a product you still own)
    subjects: tuple[Part, ...]  # the thing as a whole: "the pasta", "this blender"
    parts: tuple[Part, ...]  # its aspects: "the service", "the battery"
    leads: tuple[str, ...]  # openings ending in "and", completed by an event about "it"
    events: tuple[tuple[str, ...], tuple[str, ...]]  # (positive, negative) clauses after a lead
    closers: tuple[tuple[str, ...], tuple[str, ...]]  # (positive, negative) final sentences


@dataclass(frozen=True)
class Vocabulary:
    adjectives: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]  # kind -> (positive, negative)
    intensifiers: tuple[str, ...]
    domains: dict[str, tuple[Domain, ...]]  # one Domain per reviewed item


@functools.cache
def vocabulary() -> Vocabulary:
    """The grammar's words, read once from `reviews.yaml` (packaged beside this module)."""
    spec = yaml.safe_load(resources.files(__package__).joinpath(VOCABULARY).read_text())
    singular_s = tuple(spec["singular_s"])

    def parts(kind: str, nps: list[str]) -> tuple[Part, ...]:
        return tuple(Part(np, kind, np.endswith("s") and np not in singular_s) for np in nps)

    def domain(d: dict, item: str, own_parts: list[str]) -> Domain:
        kind = d["subject"]["kind"]
        return Domain(
            tense=d["tense"],
            subjects=(Part(d["subject"]["np"].format(item=item), kind),),
            parts=parts(kind, own_parts) + sum((parts(k, nps) for k, nps in d["parts"]), ()),
            leads=tuple(lead.format(item=item) for lead in d["leads"]),
            events=_polar(d["events"]),
            closers=_polar(d["closers"]),
        )

    return Vocabulary(
        adjectives={kind: _polar(pools) for kind, pools in spec["adjectives"].items()},
        intensifiers=tuple(spec["intensifiers"]),
        domains={
            name: tuple(domain(d, item, own) for item, own in d["items"].items())
            for name, d in spec["domains"].items()
        },
    )


def _polar(pools: dict[str, list[str]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(pools["positive"]), tuple(pools["negative"])


def _copula(part: Part, tense: str) -> str:
    if tense == "past":
        return "were" if part.plural else "was"
    return "are" if part.plural else "is"


def _adjective_phrase(rng: random.Random, kind: str, polarity: int) -> str:
    """One or two adjectives of one polarity, sometimes intensified: "really bland and cold"."""
    words = vocabulary()
    pool = words.adjectives[kind][0 if polarity == POS else 1]
    first, second = rng.sample(pool, 2)
    phrase = f"{rng.choice(words.intensifiers)} {first}" if rng.random() < 0.3 else first
    return f"{phrase} and {second}" if rng.random() < 0.3 else phrase


def _description(rng: random.Random, domain: Domain, part: Part, polarity: int) -> str:
    """Describe `part`; sometimes contrast it with another part, which carries `polarity`.

    VADER weighs the clause after "but" more, so "the pasta was great but the service was rude"
    scores negative, as a reader would.
    """
    others = [p for p in domain.parts if p != part]
    if rng.random() < 0.15:
        other = rng.choice(others)
        return (f"{part.np} {_copula(part, domain.tense)} "
                f"{_adjective_phrase(rng, part.kind, -polarity)} but {other.np} "
                f"{_copula(other, domain.tense)} {_adjective_phrase(rng, other.kind, polarity)}")
    text = f"{part.np} {_copula(part, domain.tense)} {_adjective_phrase(rng, part.kind, polarity)}"
    if rng.random() < 0.2:
        other = rng.choice(others)
        text += (f" and {other.np} {_copula(other, domain.tense)} "
                 f"{_adjective_phrase(rng, other.kind, polarity)}")
    return text


def _event(rng: random.Random, domain: Domain, polarity: int) -> str:
    """What follows a lead ("i bought this blender and ..."): a stock clause, or "it is <adj>"."""
    if rng.random() < 0.3:
        copula = "was" if domain.tense == "past" else "is"
        return f"it {copula} {_adjective_phrase(rng, domain.subjects[0].kind, polarity)}"
    return rng.choice(domain.events[0 if polarity == POS else 1])


def _review(rng: random.Random) -> str:
    domain = rng.choice(rng.choice(list(vocabulary().domains.values())))
    polarity = rng.choice((POS, NEG))
    if rng.random() < 0.35:
        sentences = [f"{rng.choice(domain.leads)} {_event(rng, domain, polarity)}"]
    else:
        part = rng.choice(domain.subjects + domain.parts)
        sentences = [_description(rng, domain, part, polarity)]
    if rng.random() < 0.4:
        sentences.append(_description(rng, domain, rng.choice(domain.parts), polarity))
    if rng.random() < 0.5:
        sentences.append(rng.choice(domain.closers[0 if polarity == POS else 1]))
    return " . ".join(sentences) + " ."


def generate_reviews(n: int, *, seed: int) -> list[str]:
    """Sample `n` reviews of mixed sentiment from the grammar.

    Args:
        n: number of reviews.
        seed: seeds the private `random.Random`; the same seed gives the same reviews.

    Returns:
        Lower-case reviews with space-separated punctuation, about half positive, half negative.
    """
    rng = random.Random(seed)
    return [_review(rng) for _ in range(n)]


def _openings() -> list[str]:
    """Every neutral opening the grammar can start a review with, sorted for determinism."""
    found = set()
    for domains in vocabulary().domains.values():
        for domain in domains:
            found.update(domain.leads)
            for part in domain.subjects + domain.parts:
                found.add(part.np)
                found.add(f"{part.np} {_copula(part, domain.tense)}")
    return sorted(found)


# Fixed, so that the train/eval split of the prompts never changes with the run's seed.
_SPLIT_SEED = 1234
_EVAL_FRACTION = 0.3
SPLITS = ("train", "eval")


def make_prompts(n: int, *, split: str) -> list[str]:
    """Neutral review openings to continue: "the pasta was", "i bought this blender and".

    Args:
        n: number of prompts; the split's pool is cycled through if it has fewer.
        split: "train" (prompts for PPO rollouts) or "eval" (held out: no string is shared with
            the train split).

    Returns:
        `n` prompts in a fixed order; a shorter list is a prefix of a longer one.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown prompt split {split!r}; accepted: {', '.join(SPLITS)}")
    openings = _openings()
    random.Random(_SPLIT_SEED).shuffle(openings)
    n_eval = int(len(openings) * _EVAL_FRACTION)
    pool = openings[:n_eval] if split == "eval" else openings[n_eval:]
    return [pool[i % len(pool)] for i in range(n)]
