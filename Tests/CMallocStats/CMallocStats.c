// The header's inline function is the whole of this target; SwiftPM wants one source file.
#include "CMallocStats.h"
