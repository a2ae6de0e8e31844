"""Blind baseline (Das et al. 2025, as in lluisgomez/CLIP-MIA-Bench): captions only, no model.

TF-IDF of word 1-2-grams, class-balanced logistic regression, 5-fold stratified cross-validation on
the evaluation pairs themselves (member_eval captions labelled 1, nonmember_eval 0); each pair's
score is its out-of-fold P(member). It is not a realistic attacker (it is trained on evaluation
labels): it measures how much of an attack's success a distribution shift between the member and
non-member captions alone explains. On i.i.d. splits it should sit at 0.5 AUC.
"""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline

from mia.attacks.base import Attack, AttackContext, AttackResult
from mia.data.splits import MEMBER_EVAL, NONMEMBER_EVAL


class Blind(Attack):
    name = "blind"
    baseline = True  # captions only: what the member / non-member shift alone scores
    uncalibrated = (
        "fits a classifier on the evaluation labels (cross-validated): a run with D_no as "
        "members scores D_no with another classifier"
    )

    def __init__(
        self,
        *,
        folds: int,
        ngram_max: int,
        min_df: int,
        max_features: int | None,
        C: float,
        max_iter: int,
        top_terms: int,
    ):
        self.folds, self.ngram_max, self.min_df, self.max_features = (
            folds,
            ngram_max,
            min_df,
            max_features,
        )
        self.C, self.max_iter, self.top_terms = C, max_iter, top_terms

    def classifier(self):
        # The vectoriser sits inside the pipeline, so each fold's vocabulary and IDF come from its
        # training folds only: no held-out caption shapes its own features.
        return make_pipeline(
            TfidfVectorizer(
                ngram_range=(1, self.ngram_max), min_df=self.min_df, max_features=self.max_features
            ),
            LogisticRegression(C=self.C, class_weight="balanced", max_iter=self.max_iter),
        )

    def run(self, ctx: AttackContext) -> AttackResult:
        members, nonmembers = ctx.captions(MEMBER_EVAL), ctx.captions(NONMEMBER_EVAL)
        texts = np.array(list(members) + list(nonmembers), dtype=object)
        labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))].astype(int)
        cv = StratifiedKFold(n_splits=self.folds, shuffle=True, random_state=ctx.seed)
        scores = cross_val_predict(self.classifier(), texts, labels, cv=cv, method="predict_proba")[
            :, 1
        ]
        # For the report only: the n-grams a fit on all pairs finds most telling of each side.
        clf = self.classifier().fit(texts, labels)
        vocab = clf[0].get_feature_names_out()
        order = np.argsort(clf[1].coef_[0])
        diagnostics = {
            "folds": self.folds,
            "n_terms": int(len(vocab)),
            "member_terms": [str(t) for t in vocab[order[::-1][: self.top_terms]]],
            "nonmember_terms": [str(t) for t in vocab[order[: self.top_terms]]],
        }
        return AttackResult(scores[: len(members)], scores[len(members) :], diagnostics)
