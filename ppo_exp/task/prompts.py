"""The embedded offline task: a small grammar of short English reviews of mixed sentiment.

It stands in for a real corpus so that the default experiment runs with no downloads. A review
opens with a neutral phrase ("the pasta was", "i bought this blender and") and its continuation
decides the sentiment, so a model pretrained on the corpus starts near a mean VADER score of 0
and PPO has a lot of room to push it positive:

    the pasta was bland and cold . the service was slow . avoid this place .
    i bought this phone and it works perfectly . the battery is excellent .

Every choice goes through a `random.Random(seed)`, so a seed fixes the corpus exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

POS, NEG = 1, -1

# Adjective pools by what they describe: (positive, negative). Each pool has as many positive as
# negative words, because sampling at temperature < 1 sharpens p**(1/T) and so favours the side
# that spreads its probability over fewer words. Positive words score higher in VADER's lexicon
# than negative ones, so the positive pools hold more words that VADER does not know ("tasty").
ADJECTIVES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "food": (
        ("delicious", "fresh", "tasty", "amazing", "perfect", "flavorful", "crispy", "hearty"),
        ("bland", "cold", "stale", "awful", "terrible", "disgusting", "greasy", "bad"),
    ),
    "service": (
        ("friendly", "helpful", "kind", "attentive", "polite", "quick", "welcoming", "great"),
        ("rude", "slow", "unfriendly", "careless", "lazy", "dismissive", "terrible", "awful"),
    ),
    "place": (
        ("clean", "comfortable", "cozy", "spacious", "quiet", "beautiful", "charming", "modern"),
        ("dirty", "noisy", "cramped", "gross", "smelly", "ugly", "filthy", "horrible"),
    ),
    "story": (
        ("brilliant", "clever", "gripping", "moving", "touching", "funny", "exciting", "original"),
        ("boring", "dull", "confusing", "predictable", "awful", "pointless", "dreadful", "stupid"),
    ),
    "craft": (
        ("brilliant", "superb", "believable", "memorable", "charming", "convincing", "strong",
         "natural"),
        ("terrible", "awful", "weak", "wooden", "horrible", "annoying", "bad", "forgettable"),
    ),
    "build": (
        ("excellent", "solid", "sturdy", "great", "reliable", "impressive", "perfect", "durable"),
        ("flimsy", "cheap", "poor", "terrible", "useless", "weak", "awful", "faulty"),
    ),
    "price": (
        ("fair", "reasonable", "great", "affordable"),
        ("steep", "ridiculous", "outrageous", "insane"),
    ),
}
INTENSIFIERS = ("very", "really", "so", "quite", "extremely")


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


def _parts(kind: str, *nps: str) -> tuple[Part, ...]:
    # A trailing "s" marks a plural ("the fries" -> "were"), except in a few singular nouns.
    singular_s = ("the service", "the waitress", "the bass", "the lens", "the autofocus")
    return tuple(Part(np, kind, np.endswith("s") and np not in singular_s) for np in nps)


PRODUCT_EVENTS = (
    ("it works well", "it works great", "it is worth every penny", "i love it",
     "it has been excellent so far", "it is the best thing i have bought this year"),
    ("it broke after a week", "it died after two days", "it is a waste of money",
     "i hate it", "it has been awful so far", "it is the worst thing i have bought this year"),
)
PRODUCT_CLOSERS = (
    ("highly recommended", "i would buy it again", "i am very happy with it", "five stars"),
    ("avoid it", "i regret buying it", "i am very disappointed", "one star"),
)


def _product(item: str, *parts: str) -> Domain:
    return Domain(
        tense="present",
        subjects=(Part(f"this {item}", "build"),),
        parts=_parts("build", *parts, "the design") + _parts("price", "the price"),
        leads=(f"i bought this {item} and", f"i ordered this {item} online and",
               f"i got this {item} last month and"),
        events=PRODUCT_EVENTS,
        closers=PRODUCT_CLOSERS,
    )


DOMAINS: dict[str, tuple[Domain, ...]] = {
    "restaurant": tuple(
        Domain(
            tense="past",
            subjects=(Part(f"the {food}", "food"),),
            parts=_parts("food", "the fries", "the dessert", "the bread", "the coffee", "the wine")
            + _parts("service", "the service", "the staff", "our waiter", "the waitress")
            + _parts("place", "the dining room", "the atmosphere", "the patio")
            + _parts("price", "the prices"),
            leads=(f"we ordered the {food} and", f"i had the {food} and",
                   f"my wife had the {food} and"),
            events=(
                ("it was the best meal we have had in years", "everything tasted amazing",
                 "we enjoyed every bite", "we loved it"),
                ("it was the worst meal we have had in years", "everything tasted awful",
                 "we regretted every bite", "we hated it"),
            ),
            closers=(
                ("we will come back", "highly recommended", "what a lovely place",
                 "best restaurant in town"),
                ("we will not come back", "avoid this place", "what a disappointment",
                 "worst restaurant in town"),
            ),
        )
        for food in ("pasta", "pizza", "soup", "burger", "steak", "salad", "curry", "sushi",
                     "chicken", "lasagna", "risotto", "breakfast")
    ),
    "product": (
        _product("phone", "the battery", "the screen", "the camera"),
        _product("laptop", "the keyboard", "the screen", "the battery", "the trackpad"),
        _product("blender", "the motor", "the lid", "the blades"),
        _product("vacuum", "the suction", "the cord", "the filter"),
        _product("kettle", "the handle", "the lid"),
        _product("toaster", "the dial", "the slots"),
        _product("camera", "the lens", "the battery", "the autofocus"),
        _product("speaker", "the sound", "the bass", "the battery"),
        _product("headset", "the sound", "the microphone", "the cushions"),
        _product("watch", "the strap", "the screen", "the battery"),
        _product("backpack", "the straps", "the zipper", "the pockets"),
        _product("mattress", "the foam", "the cover"),
        _product("printer", "the ink", "the paper tray"),
        _product("coffee maker", "the carafe", "the filter", "the timer"),
        _product("desk chair", "the wheels", "the armrests", "the cushion"),
        _product("jacket", "the zipper", "the lining", "the hood"),
    ),
    "movie": tuple(
        Domain(
            tense="past",
            subjects=(Part(f"this {film}", "story"),),
            parts=_parts("story", "the plot", "the story", "the ending", "the pacing",
                         "the plot twist", "the dialogue")
            + _parts("craft", "the acting", "the cast", "the soundtrack", "the music",
                     "the visual effects", "the lead actor", "the director"),
            leads=(f"we watched this {film} and", f"i saw this {film} last night and",
                   f"my kids and i watched this {film} and"),
            events=(
                ("i loved every minute of it", "it was the best thing i have seen all year",
                 "we laughed the whole time", "it was a pleasure to watch"),
                ("i hated every minute of it", "it was the worst thing i have seen all year",
                 "we were bored the whole time", "it was a chore to watch"),
            ),
            closers=(
                ("highly recommended", "a must see", "i will watch it again", "what a gem"),
                ("skip this one", "what a waste of time", "not worth your time", "what a mess"),
            ),
        )
        for film in ("movie", "film", "sequel", "show", "documentary", "cartoon")
    ),
    "hotel": tuple(
        Domain(
            tense="past",
            subjects=(Part(f"the {place}", "place"),),
            parts=_parts("place", "the room", "the bed", "the bathroom", "the pool", "the hallway",
                         "the view", "the location")
            + _parts("service", "the staff", "the front desk", "the manager")
            + _parts("food", "the breakfast", "the coffee")
            + _parts("price", "the rates"),
            leads=(f"we stayed at the {place} and", f"we spent two nights at the {place} and",
                   f"i booked the {place} and"),
            events=(
                ("we had a wonderful stay", "everything was perfect", "we felt very welcome",
                 "it was the best trip we have had"),
                ("we had a terrible stay", "everything was dirty", "we felt very unwelcome",
                 "it was the worst trip we have had"),
            ),
            closers=(
                ("we will stay here again", "highly recommended", "a lovely place to stay",
                 "worth every penny"),
                ("we will not stay here again", "avoid this place", "a horrible place to stay",
                 "not worth the money"),
            ),
        )
        for place in ("hotel", "resort", "motel", "inn", "hostel", "cabin")
    ),
    "book": tuple(
        Domain(
            tense="past",
            subjects=(Part(f"this {book}", "story"),),
            parts=_parts("story", "the plot", "the story", "the ending", "the writing",
                         "the characters", "the first chapter")
            + _parts("craft", "the author", "the narrator", "the illustrations"),
            leads=(f"i read this {book} and", f"i borrowed this {book} and",
                   f"my book club read this {book} and"),
            events=(
                ("i loved every page", "it is now one of my favorites", "i enjoyed it a lot",
                 "it was a joy to read"),
                ("i hated every page", "it is now one of my least favorites",
                 "i disliked it a lot", "it was a pain to read"),
            ),
            closers=(
                ("a must read", "highly recommended", "i will read it again", "what a gem"),
                ("not worth reading", "skip this one", "what a waste of time", "what a mess"),
            ),
        )
        for book in ("book", "memoir", "biography", "mystery", "cookbook")
    ),
}


def _copula(part: Part, tense: str) -> str:
    if tense == "past":
        return "were" if part.plural else "was"
    return "are" if part.plural else "is"


def _adjective_phrase(rng: random.Random, kind: str, polarity: int) -> str:
    """One or two adjectives of one polarity, sometimes intensified: "really bland and cold"."""
    pool = ADJECTIVES[kind][0 if polarity == POS else 1]
    first, second = rng.sample(pool, 2)
    phrase = f"{rng.choice(INTENSIFIERS)} {first}" if rng.random() < 0.3 else first
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
    domain = rng.choice(rng.choice(list(DOMAINS.values())))
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
    for domains in DOMAINS.values():
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
