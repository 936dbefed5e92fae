/* A C loop's source compiled once per dtype: the source (SOURCE, its path from here) defines
   SOURCE and PREFIX and includes this file where T is not yet defined; this includes the source
   back with T, IT (the integer of T's width), LANES_N (T's in 64 bytes), SQRT, EXP (float32:
   exp_float.h's, which vectorises) and NAME(x) = <PREFIX>_<dtype>_x set, for float32 and float64.
   ttt_linear.c, ttt_mlp.c, titans.c, log_linear.c and mesa_net.c use it. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "exp_float.h"

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

#define T float
#define IT int32_t
#define LANES_N 16
#define SQRT sqrtf
#define EXP exp_float
#define NAME(x) CAT(CAT(PREFIX, _float32_), x)
#include SOURCE
#undef T
#undef IT
#undef LANES_N
#undef SQRT
#undef EXP
#undef NAME

#define T double
#define IT int64_t
#define LANES_N 8
#define SQRT sqrt
#define EXP exp
#define NAME(x) CAT(CAT(PREFIX, _float64_), x)
#include SOURCE
