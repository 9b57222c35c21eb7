// The header is the whole of this target; SwiftPM wants one source file.
#include "CFuzzer.h"
