// The wire as the Apache Avro Java library sees it (Debian's libavro-java):
// what a partner agency on the JVM computes and decodes, with no OIX code.
//
//   java OixWire fingerprint FILE.avsc   -> the single-object header bytes (hex)
//   java OixWire reencode FILE.avsc      -> stdin: hex values, one per line;
//                                           stdout: each decoded by BinaryMessageDecoder
//                                           and encoded again by BinaryMessageEncoder (hex)
//   java OixWire reencode FILE.avsc OLDER.avsc ...
//                                        -> the same, values written with any of the
//                                           older released files, resolved to FILE's schema
import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;

public final class OixWire {
    private OixWire() {}

    private static String hex(byte[] bytes) {
        StringBuilder out = new StringBuilder();
        for (byte b : bytes) {
            out.append(String.format("%02x", b & 0xff));
        }
        return out.toString();
    }

    private static byte[] unhex(String text) {
        byte[] out = new byte[text.length() / 2];
        for (int i = 0; i < out.length; i++) {
            out[i] = (byte) Integer.parseInt(text.substring(2 * i, 2 * i + 2), 16);
        }
        return out;
    }

    public static void main(String[] args) throws Exception {
        Schema schema = new Schema.Parser().parse(new File(args[1]));
        if (args[0].equals("fingerprint")) {
            long fingerprint = SchemaNormalization.parsingFingerprint64(schema);
            ByteBuffer header = ByteBuffer.allocate(10).order(ByteOrder.LITTLE_ENDIAN);
            header.put((byte) 0xc3).put((byte) 0x01).putLong(fingerprint);
            System.out.println(hex(header.array()));
            return;
        }
        BinaryMessageDecoder<GenericRecord> decoder =
                new BinaryMessageDecoder<>(GenericData.get(), schema);
        for (int i = 2; i < args.length; i++) {
            decoder.addSchema(new Schema.Parser().parse(new File(args[i])));
        }
        BinaryMessageEncoder<GenericRecord> encoder =
                new BinaryMessageEncoder<>(GenericData.get(), schema);
        BufferedReader lines = new BufferedReader(new InputStreamReader(System.in, "UTF-8"));
        for (String line = lines.readLine(); line != null; line = lines.readLine()) {
            GenericRecord record = decoder.decode(unhex(line.trim()));
            ByteBuffer again = encoder.encode(record);
            byte[] bytes = new byte[again.remaining()];
            again.get(bytes);
            System.out.println(hex(bytes));
        }
    }
}
