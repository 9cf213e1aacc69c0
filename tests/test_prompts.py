import re
import statistics

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from ppo_exp.task.prompts import generate_reviews, make_prompts


@pytest.fixture(scope="module")
def corpus():
    return generate_reviews(5000, seed=0)


def test_reviews_are_deterministic_per_seed():
    assert generate_reviews(50, seed=3) == generate_reviews(50, seed=3)
    assert generate_reviews(50, seed=3) != generate_reviews(50, seed=4)


def test_reviews_are_short_lowercase_sentences(corpus):
    for review in corpus:
        assert review == review.lower()
        assert review.endswith(" .")
        assert 3 <= len(review.split()) <= 45


def test_vocabulary_is_varied_but_small(corpus):
    vocabulary = {word for review in corpus for word in review.split()}
    assert 250 <= len(vocabulary) <= 1000


def test_corpus_sentiment_is_balanced(corpus):
    analyzer = SentimentIntensityAnalyzer()
    scores = [analyzer.polarity_scores(review)["compound"] for review in corpus]
    positive = sum(score > 0.05 for score in scores) / len(scores)
    negative = sum(score < -0.05 for score in scores) / len(scores)
    assert abs(statistics.mean(scores)) < 0.05
    assert 0.4 <= positive <= 0.6 and 0.4 <= negative <= 0.6
    assert max(scores) > 0.8 and min(scores) < -0.8  # room for PPO to push either way


@pytest.mark.parametrize("split", ["train", "eval"])
def test_prompts_are_deterministic_and_extendable(split):
    assert make_prompts(40, split=split) == make_prompts(40, split=split)
    assert make_prompts(400, split=split)[:40] == make_prompts(40, split=split)
    assert len(make_prompts(1000, split=split)) == 1000


def test_eval_prompts_are_held_out():
    train, eval_ = set(make_prompts(1000, split="train")), set(make_prompts(1000, split="eval"))
    assert len(eval_) >= 64 and len(train) >= 2 * len(eval_)
    assert not train & eval_


def test_prompts_are_neutral_openings_of_reviews(corpus):
    analyzer = SentimentIntensityAnalyzer()
    prompts = set(make_prompts(1000, split="train")) | set(make_prompts(1000, split="eval"))
    openings = {" ".join(review.split()[:n]) for review in generate_reviews(20_000, seed=0)
                for n in range(1, 9)}
    for prompt in prompts:
        assert 1 <= len(prompt.split()) <= 8
        assert prompt in openings, prompt
        assert analyzer.polarity_scores(prompt)["compound"] == 0, prompt


def test_bad_split_names_the_value_and_the_accepted_ones():
    with pytest.raises(ValueError, match=re.escape("'test'") + ".*train, eval"):
        make_prompts(4, split="test")
