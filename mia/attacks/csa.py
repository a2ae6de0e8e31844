"""CSA, the cosine similarity attack (Ko et al. 2023): s = cos(f_img(x), f_txt(y))."""
from mia.attacks.base import Attack, AttackContext, AttackResult
from mia.data.splits import MEMBER_EVAL, NONMEMBER_EVAL


class CSA(Attack):
    name = "csa"

    def run(self, ctx: AttackContext) -> AttackResult:
        # The store's embeddings are already L2-normalised, so the cosine is their dot product.
        return AttackResult(ctx.features[MEMBER_EVAL].cos, ctx.features[NONMEMBER_EVAL].cos)
