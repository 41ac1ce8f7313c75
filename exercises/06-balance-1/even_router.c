/* Exercise 06-balance-1: the expert-level loss of a perfectly even router is α₁, whatever the
 * affinities; a router whose top-2 choices pile onto two experts pays more.
 * E = 4, K = 2, T = 2 tokens, α₁ = 0.003; each token goes to its own two best experts. */
#include "balance.h"

#include <stdio.h>

int main(void)
{
    const float even_s[2 * 4] = {0.40f, 0.30f, 0.20f, 0.10f,     /* token 0: best 0, 1 */
                                 0.10f, 0.15f, 0.25f, 0.50f};    /* token 1: best 3, 2 */
    const float uneven_s[2 * 4] = {0.40f, 0.30f, 0.20f, 0.10f,   /* token 0: best 0, 1 */
                                   0.50f, 0.30f, 0.10f, 0.10f};  /* token 1: best 0, 1 */
    const int even[2 * 2] = {0, 1, 3, 2}, uneven[2 * 2] = {0, 1, 0, 1};
    const BalanceSpec spec = {.E = 4, .K = 2, .D = 1, .M = 1, .alpha1 = 0.003};
    printf("even:   L_ExpBal = %.6f\n", balance_losses(even_s, even, 2, &spec, NULL).expert);
    printf("uneven: L_ExpBal = %.6f\n", balance_losses(uneven_s, uneven, 2, &spec, NULL).expert);
    return 0;
}
