"""CSA, the cosine similarity attack (Ko et al. 2023): s = cos(f_img(x), f_txt(y))."""

from mia.attacks.base import Attack, AttackContext, AttackResult
from mia.data.splits import MEMBER_EVAL, NONMEMBER_EVAL


class CSA(Attack):
    name = "csa"
    per_pair = True

    def score(self, ctx: AttackContext, set_name: str):
        # The store's embeddings are already L2-normalised, so the cosine is their dot product.
        return ctx.features[set_name].cos

    def run(self, ctx: AttackContext) -> AttackResult:
        return AttackResult(self.score(ctx, MEMBER_EVAL), self.score(ctx, NONMEMBER_EVAL))
