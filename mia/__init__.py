"""mia: membership inference attacks on CLIP-style models with i.i.d. member / non-member splits."""
