// Writes the golden .hgrm files of tests/report.rs with HdrHistogram's Java
// implementation (the reference the .hgrm format comes from):
//   java -cp HdrHistogram-2.2.2.jar tests/data/Golden.java known > tests/data/known.hgrm
//   java -cp HdrHistogram-2.2.2.jar tests/data/Golden.java ties  > tests/data/ties.hgrm
// (the jar is in .cache/kafka/libs/ once scripts/kafka has fetched Kafka).
import org.HdrHistogram.*;

public class Golden {
  public static void main(String[] args) {
    Histogram h = new Histogram(1, 60_000_000_000L, 3);
    if (args[0].equals("known")) {
      // 10 000 values from 1 µs to 10 ms in ns, plus a tail: 10 at 50 ms, 1 at 1.5 s.
      for (long i = 1; i <= 10000; i++) h.recordValue(i * 1000 + (i % 7) * 13);
      for (int i = 0; i < 10; i++) h.recordValue(50_000_000L);
      h.recordValue(1_500_000_000L);
    } else {
      // Running counts that land exactly on percentile steps (5 000 of 40 000 is 12.5%).
      for (long v = 1; v <= 8; v++) h.recordValueWithCount(v * 100_000L + v * 7, 5_000);
      for (long i = 0; i < 40_000; i++) h.recordValue(900_000L + (i % 1_000) * 1_000);
    }
    h.outputPercentileDistribution(System.out, 5, 1000.0);
  }
}
