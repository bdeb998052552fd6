/* For tests under Wine only; never shipped. Rust's std draws its random numbers on Windows
 * from ProcessPrng in bcryptprimitives.dll, which Debian's Wine 8.0 does not have. This
 * stand-in, placed next to the .exe under test by scripts/test-platforms, answers from
 * RtlGenRandom (advapi32's SystemFunction036), the generator Windows had before. */
#include <windows.h>

BOOLEAN NTAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
  while (length > 0) {
    ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
    if (!SystemFunction036(data, chunk)) return FALSE;
    data += chunk;
    length -= chunk;
  }
  return TRUE;
}
