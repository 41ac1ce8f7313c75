program rmsnorm_by_hand.c
