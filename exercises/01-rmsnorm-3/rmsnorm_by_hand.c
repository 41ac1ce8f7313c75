/* Exercise 01-rmsnorm-3: RMSNorm of one row, x = (3, 4), w = (2, 0.5), ε = 1e-6. */
#include "rmsnorm.h"

#include <stdio.h>

int main(void)
{
    const float x[2] = {3.0f, 4.0f}, w[2] = {2.0f, 0.5f};
    float y[2];
    rmsnorm_forward(y, x, w, 1, 2, 1e-6f);
    printf("y = (%.4f, %.4f)\n", y[0], y[1]);
    return 0;
}
