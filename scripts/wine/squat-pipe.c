/* For tests under Wine only; never shipped. Takes a named pipe's name before stride-vectors
 * can, the way another program could: creates the pipe with a single instance and connects
 * to it itself, so the owner cannot create it and relays find it busy. Holds it until its
 * stdin closes (or it is killed). Prints "ready" once the name is taken.
 *
 *   squat-pipe.exe \\.\pipe\NAME */
#include <stdio.h>
#include <windows.h>

int wmain(int argc, wchar_t **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: squat-pipe PIPE-NAME\n");
    return 2;
  }
  HANDLE server = CreateNamedPipeW(argv[1], PIPE_ACCESS_DUPLEX | FILE_FLAG_FIRST_PIPE_INSTANCE,
                                   PIPE_TYPE_BYTE, 1, 4096, 4096, 0, NULL);
  if (server == INVALID_HANDLE_VALUE) {
    fprintf(stderr, "CreateNamedPipe failed: %lu\n", GetLastError());
    return 1;
  }
  HANDLE client = CreateFileW(argv[1], GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING, 0, NULL);
  if (client == INVALID_HANDLE_VALUE) {
    fprintf(stderr, "connecting to it failed: %lu\n", GetLastError());
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  char buffer[64];
  while (fread(buffer, 1, sizeof buffer, stdin) > 0) {
  }
  return 0;
}
